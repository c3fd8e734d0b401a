"""Every error the server returns, in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`.

`ApiError` is what handlers raise; `from_exception` maps ponder's exception tree onto HTTP statuses:

    InvalidParameter, UnknownName, MissingExtra, VerifierError   400 invalid_request_error
    ContextOverflow                                              400 code context_length_exceeded
    BudgetExhausted (escaping a strategy)                        400 code budget_exhausted
    UpstreamTimeout                                              504
    UpstreamError 4xx (not 401/403)                              the upstream status, passed through
    UpstreamError otherwise                                      502
    UpstreamUnavailable                                          503
    anything else                                                500 with a generic message; the traceback goes
                                                                 to the server log only

No response ever carries a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from fastapi.responses import JSONResponse

from ponder.errors import (
    BudgetExhausted,
    ContextOverflow,
    InvalidParameter,
    MissingExtra,
    UnknownName,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    VerifierError,
)

log = logging.getLogger("ponder.server")

_TYPES: Mapping[int, str] = {
    400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
    405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
    429: "rate_limit_error", 502: "upstream_error", 503: "service_unavailable", 504: "timeout_error",
}


class ApiError(Exception):
    """An error response: status, message, and OpenAI's type/param/code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, dict[str, str | None]]:
        kind = _TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def _upstream(exc: UpstreamError) -> ApiError:
    if isinstance(exc, UpstreamTimeout):
        return ApiError(504, f"the upstream server did not answer in time: {exc}", code="upstream_timeout")
    status = exc.status or 502
    if 400 <= status < 500 and status not in (401, 403):
        return ApiError(status, f"the upstream server refused the request: {exc}", code="upstream_error")
    return ApiError(502, f"the upstream server failed: {exc}", code="upstream_error")


def from_exception(exc: BaseException) -> ApiError:
    """The ApiError for an exception raised while serving a request."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidParameter):
        return ApiError(400, str(exc), param=exc.name, code="invalid_parameter")
    if isinstance(exc, UnknownName):
        return ApiError(400, str(exc), param=exc.kind, code=f"unknown_{exc.kind}")
    if isinstance(exc, ContextOverflow):
        return ApiError(400, str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, BudgetExhausted):
        return ApiError(400, str(exc), param="ponder.budget", code="budget_exhausted")
    if isinstance(exc, (MissingExtra, VerifierError)):
        return ApiError(400, str(exc), code="unsupported")
    if isinstance(exc, UpstreamError):
        return _upstream(exc)
    if isinstance(exc, UpstreamUnavailable):
        return ApiError(503, f"the upstream server cannot be reached: {exc}", code="upstream_unavailable")
    log.error("internal error while serving a request", exc_info=exc)
    return ApiError(500, "the server failed while answering; the details are in its log", code="internal_error")
