"""Turn what a user typed (a catalogue name or a path to a .gguf file) into a path to a valid GGUF file."""

from __future__ import annotations

from pathlib import Path

from ponder.errors import CorruptModel, ModelNotFound
from ponder.models import cache, catalogue, fetch
from ponder.models.gguf import MAGIC


def resolve(name_or_path: str | Path, pull: bool = True) -> Path:
    """A catalogue name (pulled if absent, unless `pull=False`) or an existing .gguf path, checked by magic bytes.

    Raises UnknownName for a name that is neither in the catalogue nor a path, ModelNotFound for a missing path
    (or an unpulled model with `pull=False`), and CorruptModel for a file that is not GGUF.
    """
    text = str(name_or_path)
    if text in catalogue.CATALOGUE:
        if pull:
            return fetch.pull(text)
        path = cache.model_path(text)
        if not path.is_file():
            raise ModelNotFound(f"model {text!r} is not pulled yet; run `ponder models pull {text}`")
        return path
    path = Path(text).expanduser()
    if path.exists():
        return check_magic(path)
    if _looks_like_path(text):
        raise ModelNotFound(f"model file {path} does not exist; check the path or pass a catalogue model name")
    catalogue.get(text)  # raises UnknownName listing the catalogue
    raise AssertionError("unreachable")


def _looks_like_path(text: str) -> bool:
    return text.endswith(".gguf") or "/" in text or "\\" in text or text.startswith("~")


def check_magic(path: Path) -> Path:
    """`path` itself, if it is a file that starts with the GGUF magic bytes; CorruptModel otherwise."""
    if not path.is_file():
        raise CorruptModel(f"{path} is not a file; pass the path to a .gguf model file")
    with path.open("rb") as f:
        head = f.read(len(MAGIC))
    if head != MAGIC:
        raise CorruptModel(
            f"{path} is not a GGUF model (it starts with {head!r}, not {MAGIC!r}). "
            f"Fix: pass a .gguf file, or re-download it."
        )
    return path
