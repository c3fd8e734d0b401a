"""Credentials written into a server URL (`http://user:secret@host/v1`): kept out of every shown string.

This module owns splitting them off a URL and redacting them; it ignores API keys (read from the environment,
see openai.py) and everything else about URLs. httpx would send the userinfo as basic auth anyway; ponder sends
it the same way, but from a value that no log line, error, repr or store row ever sees.
"""

from __future__ import annotations

from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

REDACTED = "***"


def _netloc(parts: SplitResult, user: str | None) -> str:
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{user}@{host}{port}" if user else f"{host}{port}"


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """`url` without its userinfo, and (user, password) when it had some."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    bare = urlunsplit(parts._replace(netloc=_netloc(parts, None)))
    return bare, (unquote(parts.username or ""), unquote(parts.password or ""))


def redact_url(text: str) -> str:
    """`text` with a URL's password (or a lone userinfo token) replaced by ***; the user name stays when a password
    follows it, so that a person can still tell two servers apart. Anything that is not a URL comes back as is."""
    if "://" not in text or "@" not in text:
        return text
    parts = urlsplit(text)
    if parts.username is None and parts.password is None:
        return text
    user = f"{parts.username}:{REDACTED}" if parts.password is not None else REDACTED
    return urlunsplit(parts._replace(netloc=_netloc(parts, user)))


def is_redacted(url: str) -> bool:
    """True when `url` carries credentials that redact_url took out (so it cannot be used to connect)."""
    parts = urlsplit(url) if "://" in url else None
    return parts is not None and REDACTED in (parts.password, parts.username)
