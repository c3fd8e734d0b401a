"""Optional dependencies: import them by name, failing with the pip command that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from ponder.errors import MissingExtra


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming `pip install 'ponder[extra]'`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name and module.split(".")[0] != exc.name.split(".")[0]:
            raise  # the module exists but one of its own imports is broken: show the real error
        raise MissingExtra(module, extra) from exc
