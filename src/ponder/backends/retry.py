"""Bounded retries with full-jitter exponential backoff for HTTP backends.

Owns one decision: given one attempt's outcome (a response or a transport exception), retry or give up, and how
long to wait first. Retried: 429, 5xx, timeouts, refused connections and connections dropped mid-response.
Never retried: any other 4xx, which is the client's mistake and would fail the same way again.

After the last attempt the failure becomes a ponder error:

    timeout (any attempt's last)      -> UpstreamTimeout
    refused / unreachable             -> UpstreamUnavailable
    dropped mid-response              -> UpstreamError(status=None)
    429 / 5xx                         -> UpstreamError(status)
    other 4xx                         -> UpstreamError(status), at once (ContextOverflow for a too-long prompt)

It ignores what the request means: the caller builds it (`send`) and reads the response.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx

from ponder.errors import BackendError, ContextOverflow, UpstreamError, UpstreamTimeout, UpstreamUnavailable

log = logging.getLogger(__name__)

_DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
_CONTEXT = re.compile(r"context (length|window)|maximum context|too many tokens|context_length_exceeded", re.I)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry."""

    max_retries: int = 4
    """Retries after the first attempt (so at most max_retries + 1 requests)."""
    backoff: float = 0.5
    """Base delay in seconds; attempt k waits uniform(0, backoff * 2**k) ("full jitter")."""
    max_backoff: float = 30.0
    """Cap on one wait, Retry-After included, so a server cannot stall us for an hour."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number attempt+1; at least Retry-After when the server sent one."""
        jitter = self.rng.uniform(0.0, min(self.max_backoff, self.backoff * 2**attempt))
        if retry_after is not None:
            jitter = max(jitter, retry_after)
        return min(jitter, self.max_backoff)


def retry_after_seconds(value: str | None) -> float | None:
    """Parse a Retry-After header: seconds (fractions allowed) or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


SHOWN_CHARS = 600
"""Error text shown to a user is cut to this many characters, always after the secret is scrubbed."""


def error_text(response: httpx.Response) -> str:
    """The server's own error message: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or the body (whole:
    cut it with `shown`, which scrubs first, so that a key crossing the cut loses no prefix to it)."""
    try:
        body = response.json()
    except ValueError:
        return response.text
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)
    return str(body)


def shown(scrub: Callable[[str], str], text: str, limit: int = SHOWN_CHARS) -> str:
    """`text` scrubbed, then cut to `limit` characters (in that order: a cut first could keep part of the key)."""
    clean = scrub(text)
    return clean if len(clean) <= limit else clean[:limit] + "..."


class Scrubber:
    """Removes secrets from any text that may be shown: messages, logs, stored records.

    `secrets` returns the current secret, or several (an API key and a URL's password); empty ones are skipped.
    """

    def __init__(self, secrets: Callable[[], str | Iterable[str | None] | None]) -> None:
        self._secrets = secrets

    def __call__(self, text: str) -> str:
        found = self._secrets()
        secrets = [s for s in ((found,) if found is None or isinstance(found, str) else found) if s]
        for secret in sorted(secrets, key=len, reverse=True):  # longest first: one holding another goes whole
            text = text.replace(secret, "***")
        return text

    def __repr__(self) -> str:
        return "Scrubber(***)"


async def send_with_retries(
    send: Callable[[], Awaitable[httpx.Response]],
    policy: RetryPolicy,
    scrub: Callable[[str], str],
    what: str,
) -> httpx.Response:
    """Call `send` until it returns a 2xx response, retrying what can be retried, at most policy.max_retries times.

    `what` names the endpoint in errors ("POST http://127.0.0.1:8080/v1/chat/completions").
    """
    failure: BackendError | None = None
    for attempt in range(policy.max_retries + 1):
        retry_after = None
        try:
            response = await send()
            if response.status_code >= 400:
                await response.aread()  # a streamed response has not read its error body yet
                await response.aclose()
        except httpx.TimeoutException as exc:
            failure = UpstreamTimeout(scrub(f"{what} timed out ({type(exc).__name__}); raise `timeout` or "
                                            "check that the server is not overloaded"))
        except httpx.ConnectError as exc:
            failure = UpstreamUnavailable(scrub(f"{what} could not be reached ({exc}); check that the server is "
                                                "running and base_url is right"))
        except _DROPPED as exc:
            failure = UpstreamError(scrub(f"{what}: the server dropped the connection ({exc})"), None)
        else:
            status = response.status_code
            if status < 400:
                return response
            message = shown(scrub, f"{what} answered {status}: {error_text(response)}")
            if status != 429 and status < 500:
                if _CONTEXT.search(message):
                    raise ContextOverflow(message + "; shorten the prompt or lower max_tokens")
                raise UpstreamError(message, status)
            failure = UpstreamError(message, status)
            retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if attempt < policy.max_retries:
            wait = policy.delay(attempt, retry_after)
            log.warning("retrying in %.2fs (attempt %d of %d): %s", wait, attempt + 2, policy.max_retries + 1,
                        failure)
            await asyncio.sleep(wait)
    assert failure is not None
    raise failure
