"""A pure-Python reader for GGUF headers: magic, version, metadata key-values and tensor infos.

It reads only the header (memory-mapped, so a gigabyte model costs nothing to open) and never touches tensor data.
Large arrays (the tokenizer's vocabulary and merges) are skipped, not decoded, and appear as `ArraySummary`.
Anything that is not a well-formed GGUF header raises CorruptModel naming the file and the fix.

Layout (little-endian; GGUF v2/v3, v1 used 32-bit lengths and counts):
    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x  (string key, u32 value_type, value)
    tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset)
"""

from __future__ import annotations

import math
import mmap
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from ponder.errors import CorruptModel, ModelNotFound
from ponder.models import cache
from ponder.types import ModelInfo

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (1, 2, 3)
MAX_INLINE_ARRAY = 64
"""Arrays longer than this are skipped and summarised rather than decoded."""


class ValueType(IntEnum):
    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


_SCALAR_FORMAT = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H", ValueType.INT16: "<h",
    ValueType.UINT32: "<I", ValueType.INT32: "<i", ValueType.FLOAT32: "<f", ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q", ValueType.INT64: "<q", ValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class ArraySummary:
    """A metadata array too long to be worth decoding (e.g. tokenizer.ggml.tokens)."""

    element_type: str
    """The element's GGUF type name, e.g. "STRING"."""
    count: int
    """How many elements it holds."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header (its data is not read)."""

    name: str
    shape: tuple[int, ...]
    """Dimensions as GGUF stores them (fastest-varying first)."""
    ggml_type: int
    """The ggml quantisation type id (0 = F32, 1 = F16, 12 = Q4_K, ...)."""
    offset: int
    """Byte offset of the data within the tensor-data section."""

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class GGUFHeader:
    """Everything in a GGUF header."""

    version: int
    metadata: dict[str, Any]
    """Key -> value; long arrays are ArraySummary."""
    tensors: tuple[TensorInfo, ...]


class _Cursor:
    """A bounds-checked position in a buffer; every overrun becomes CorruptModel."""

    def __init__(self, buf: bytes | mmap.mmap, path: Path) -> None:
        self.buf, self.pos, self.path, self.wide = buf, 0, path, True

    def fail(self, what: str) -> CorruptModel:
        return CorruptModel(
            f"{self.path} is not a valid GGUF file ({what} at byte {self.pos}); it may be truncated or not a "
            f"model. Fix: re-download it, or for a catalogue model run `ponder models pull NAME`."
        )

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"needs {n} more bytes but the file ends")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > len(self.buf):
            raise self.fail(f"needs {n} more bytes but the file ends")
        self.pos += n

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def length(self) -> int:
        """A string length or element count (u64 since GGUF v2, u32 in v1)."""
        return self.unpack("<Q" if self.wide else "<I")

    def string(self) -> str:
        return self.take(self.length()).decode("utf-8", errors="replace")

    def value_type(self) -> ValueType:
        raw = self.unpack("<I")
        try:
            return ValueType(raw)
        except ValueError:
            raise self.fail(f"unknown value type {raw}") from None

    def value(self, vtype: ValueType) -> Any:
        if vtype is ValueType.STRING:
            return self.string()
        if vtype is ValueType.ARRAY:
            return self.array()
        return self.unpack(_SCALAR_FORMAT[vtype])

    def array(self) -> list[Any] | ArraySummary:
        etype, count = self.value_type(), self.length()
        if count > MAX_INLINE_ARRAY:
            self.skip_values(etype, count)
            return ArraySummary(etype.name, count)
        return [self.value(etype) for _ in range(count)]

    def skip_values(self, etype: ValueType, count: int) -> None:
        """Step over `count` values without decoding them: one jump for fixed-size types."""
        if etype in _SCALAR_FORMAT:
            self.skip(count * struct.calcsize(_SCALAR_FORMAT[etype]))
        elif etype is ValueType.STRING:
            if count * 8 > len(self.buf) - self.pos:
                raise self.fail(f"an array of {count} strings cannot fit in the file")
            for _ in range(count):
                self.skip(self.length())
        else:  # nested arrays: rare, walk them
            for _ in range(count):
                self.skip_values(self.value_type(), self.length())


def _open(path: str | Path) -> tuple[Path, Any]:
    path = Path(path).expanduser()
    if not path.exists():
        raise ModelNotFound(f"model file {path} does not exist; check the path, or pull a catalogue model")
    if not path.is_file():
        raise CorruptModel(f"{path} is not a file; pass the path to a .gguf file")
    with path.open("rb") as f:
        if path.stat().st_size < 4 or f.read(4) != MAGIC:
            raise CorruptModel(
                f"{path} is not a GGUF file (it does not start with the bytes 'GGUF'). "
                f"Fix: pass a .gguf model file, or re-download it."
            )
        return path, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)


def read_header(path: str | Path, tensors: bool = True) -> GGUFHeader:
    """Parse the header of a GGUF file (the tensor infos too unless `tensors=False`)."""
    path, buf = _open(path)
    with buf:
        cur = _Cursor(buf, path)
        cur.skip(4)
        version = cur.unpack("<I")
        if version not in SUPPORTED_VERSIONS:
            raise cur.fail(f"unsupported GGUF version {version}")
        cur.wide = version >= 2
        n_tensors, n_kv = cur.length(), cur.length()
        if n_kv * 13 > len(buf) or n_tensors * 24 > len(buf):  # 13 and 24: the smallest kv and tensor entries
            raise cur.fail(f"implausible counts ({n_kv} key-values, {n_tensors} tensors)")
        metadata: dict[str, Any] = {"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv}
        for _ in range(n_kv):
            key = cur.string()
            metadata[key] = cur.value(cur.value_type())
        infos = tuple(_tensor_info(cur) for _ in range(n_tensors)) if tensors else ()
    return GGUFHeader(version, metadata, infos)


def _tensor_info(cur: _Cursor) -> TensorInfo:
    name = cur.string()
    n_dims = cur.unpack("<I")
    if n_dims > 8:
        raise cur.fail(f"tensor {name!r} claims {n_dims} dimensions")
    shape = tuple(cur.length() for _ in range(n_dims))
    return TensorInfo(name, shape, cur.unpack("<I"), cur.unpack("<Q"))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata key-values of a GGUF file, plus "GGUF.version", "GGUF.tensor_count" and "GGUF.kv_count"."""
    return read_header(path, tensors=False).metadata


def model_info(path: str | Path) -> ModelInfo:
    """Shapes for cost models: parameter count from the tensor shapes, the rest from `<arch>.*` metadata."""
    header = read_header(path)
    meta = header.metadata
    arch = meta.get("general.architecture", "")

    def arch_int(key: str) -> int:
        value = meta.get(f"{arch}.{key}", 0)
        return int(value) if isinstance(value, int | float) else 0

    n_params = sum(t.n_elements for t in header.tensors)
    d_model, n_heads = arch_int("embedding_length"), arch_int("attention.head_count")
    head_dim = arch_int("attention.key_length") or (d_model // n_heads if n_heads else 0)
    file = Path(path).expanduser()
    size = file.stat().st_size
    return ModelInfo(
        name=str(meta.get("general.name") or file.stem),
        n_params=n_params,
        n_layers=arch_int("block_count"),
        d_model=d_model,
        n_heads=n_heads,
        n_kv_heads=arch_int("attention.head_count_kv") or n_heads,
        head_dim=head_dim,
        n_ctx_train=arch_int("context_length"),
        bytes_per_param=size / n_params if n_params else 0.0,
        sha256=cache.recorded_sha256(file),
    )
