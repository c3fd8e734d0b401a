"""Building llama-server (ponder.models.llama_server) with a fake cmake and a fake sdist: where it is cached, what
is unpacked and passed to cmake, and that a failed build leaves nothing behind. The real build and server are
exercised by test_llama_server_live.py."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.errors import ModelError
from ponder.models import llama_server

FAKE_CMAKE = """#!/bin/sh
echo "$@" >> "$CMAKE_CALLS"
if [ "$1" = "--build" ]; then
  [ -n "$CMAKE_FAIL" ] && { echo "error: boom" ; exit 3; }
  mkdir -p "$2/bin" && printf '#!/bin/sh\\necho fake server\\n' > "$2/bin/llama-server"
fi
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PONDER_HOME", str(tmp_path / "home"))
    tools = tmp_path / "tools"
    tools.mkdir()
    for name, body in (("cmake", FAKE_CMAKE), ("c++", "#!/bin/sh\n")):
        (tools / name).write_text(body)
        (tools / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tools}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CMAKE_CALLS", str(tmp_path / "calls.txt"))
    return tmp_path / "home"


def fake_sdist(folder: Path, version: str = llama_server.VERSION, evil: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"llama_cpp_python-{version}.tar.gz"
    top = f"llama_cpp_python-{version}"
    files = {f"{top}/vendor/llama.cpp/CMakeLists.txt": b"project(x)\n", f"{top}/llama_cpp/__init__.py": b""}
    if evil:
        files[f"{top}/vendor/llama.cpp/../../../../escape.txt"] = b"x"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_the_binary_is_cached_under_ponder_home_by_version(home: Path) -> None:
    assert llama_server.binary_path() == home / "bin" / f"llama-server-{llama_server.VERSION}"
    assert llama_server.cached() is None


def test_build_unpacks_the_vendored_llama_cpp_builds_only_the_server_and_caches_it(home: Path,
                                                                                 tmp_path: Path) -> None:
    fake_sdist(home / "downloads")
    lines: list[str] = []
    path = llama_server.build(log=lines.append)
    assert path == llama_server.cached() == llama_server.binary_path()
    assert path.stat().st_mode & stat.S_IXUSR and b"fake server" in path.read_bytes()
    configure, build = (tmp_path / "calls.txt").read_text().splitlines()
    assert "/vendor/llama.cpp" in configure and "-DLLAMA_CURL=OFF" in configure
    assert "-DCMAKE_BUILD_TYPE=Release" in configure and "-DBUILD_SHARED_LIBS=OFF" in configure
    assert build.endswith("--target llama-server -j 2")
    assert [p.name for p in (home / "bin").iterdir() if not p.name.startswith(".")] == [path.name]  # no leftovers
    assert llama_server.build() == path and len((tmp_path / "calls.txt").read_text().splitlines()) == 2  # cached


def test_a_sdist_beside_the_wheel_cache_is_used(home: Path) -> None:
    found = fake_sdist(home / "wheels")
    assert llama_server.sdist() == found


def test_a_failed_build_says_why_and_caches_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_sdist(home / "downloads")
    monkeypatch.setenv("CMAKE_FAIL", "1")
    with pytest.raises(ModelError, match=r"(?s)exited 3.*boom"):
        llama_server.build()
    assert llama_server.cached() is None
    assert [p.name for p in (home / "bin").iterdir() if not p.name.startswith(".")] == []


def test_no_cmake_means_no_build(home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "tools" / "cmake").unlink()
    monkeypatch.setenv("PATH", str(tmp_path / "tools"))
    assert llama_server.missing_tools() == ["cmake"]
    with pytest.raises(ModelError, match="cmake"):
        llama_server.build()


def test_members_that_leave_the_build_folder_are_refused(home: Path, tmp_path: Path) -> None:
    archive = fake_sdist(tmp_path / "evil", evil=True)
    with pytest.raises(ModelError, match="unpacked safely"):
        llama_server._extract_llama_cpp(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_running_without_a_build_names_the_command(home: Path) -> None:
    with pytest.raises(ModelError, match="ponder models build-server"), llama_server.running(Path("m.gguf")):
        pass


def test_the_server_starts_without_the_ggml_switches_ponder_set(home: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A llama-server started for comparison runs at its own defaults: GGML_CPU_TILED_MM as ponder's engine set it
    does not reach it (backends/ggml_env.py)."""
    from ponder.backends import ggml_env

    monkeypatch.setenv(ggml_env.TILED_MM, "")  # so that the variable as it was comes back afterwards
    monkeypatch.delenv(ggml_env.TILED_MM)
    monkeypatch.setattr(ggml_env, "_set_here", {})
    ggml_env.use_tiled_matmul(False)
    fake = tmp_path / "llama-server"
    fake.write_text(f"#!/bin/sh\nenv > {tmp_path / 'env.txt'}\n")  # records its environment, then exits early
    fake.chmod(0o755)
    with pytest.raises(ModelError), llama_server.running(Path("m.gguf"), binary=fake, ready_s=10):
        pass
    env = (tmp_path / "env.txt").read_text()
    assert "PATH=" in env and ggml_env.TILED_MM not in env
    assert os.environ[ggml_env.TILED_MM] == "0"  # while this process keeps it


def test_the_cli_builds_once_and_prints_the_path(home: Path) -> None:
    fake_sdist(home / "downloads")
    result = CliRunner().invoke(app, ["models", "build-server", "-j", "1"])
    assert result.exit_code == 0, result.output
    assert str(llama_server.binary_path()) in result.output
