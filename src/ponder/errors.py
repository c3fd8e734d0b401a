"""The exception tree. Every message names the problem and the fix.

    PonderError
    ├── InvalidParameter          a bad value for a named parameter (n <= 0, temperature < 0, ...)
    ├── UnknownName               an unknown model, strategy, verifier or task; lists the valid names
    ├── MissingExtra              an optional dependency is not installed; names the pip command
    ├── ModelError
    │   ├── ModelNotFound         a path that does not exist
    │   ├── CorruptModel          a file that is not a loadable GGUF
    │   └── HashMismatch          a pulled model whose sha256 or size is wrong (the file is deleted)
    ├── BackendError
    │   ├── ContextOverflow       a request that cannot fit in the context window
    │   ├── UpstreamError         an HTTP server answered with an error (status kept)
    │   │   └── UpstreamTimeout   it did not answer in time
    │   └── UpstreamUnavailable   it could not be reached
    ├── BudgetExhausted           the ledger refused a call: a token, call, dollar or time budget ran out
    ├── VerifierError             a verifier could not score (no checker for this task, ...)
    └── StoreError                a run folder that is corrupt or made with other settings
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class PonderError(Exception):
    """The base of every error ponder raises on purpose."""


class InvalidParameter(PonderError, ValueError):
    def __init__(self, name: str, value: Any, fix: str) -> None:
        self.name, self.value, self.fix = name, value, fix
        super().__init__(f"invalid {name}={value!r}: {fix}")


class UnknownName(PonderError, KeyError):
    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = "") -> None:
        self.kind, self.name, self.valid = kind, name, sorted(valid)
        msg = f"unknown {kind} {name!r}; valid {kind}s: {', '.join(self.valid) or '(none registered)'}"
        super().__init__(msg + (f". {hint}" if hint else ""))

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class MissingExtra(PonderError, ImportError):
    def __init__(self, module: str, extra: str) -> None:
        self.module, self.extra = module, extra
        super().__init__(
            f"{module!r} is not installed; it comes with ponder's {extra!r} extra: "
            f"pip install 'ponder[{extra}]'"
        )


class ModelError(PonderError):
    pass


class ModelNotFound(ModelError, FileNotFoundError):
    pass


class CorruptModel(ModelError):
    pass


class HashMismatch(ModelError):
    pass


class BackendError(PonderError):
    pass


class ContextOverflow(BackendError):
    pass


class UpstreamError(BackendError):
    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class UpstreamTimeout(UpstreamError):
    pass


class UpstreamUnavailable(BackendError):
    pass


class BudgetExhausted(PonderError):
    def __init__(self, resource: str, limit: float, spent: float) -> None:
        self.resource, self.limit, self.spent = resource, limit, spent
        super().__init__(
            f"{resource} budget exhausted: spent {spent:g} of {limit:g}; raise the budget to go further"
        )


class VerifierError(PonderError):
    pass


class StoreError(PonderError):
    pass
