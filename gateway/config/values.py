"""Field-level pieces of the settings models: durations, URL and host checks, annotated types.

Durations are `30s`, `8h`, `1h30m`, `250ms`, `2d` or plain seconds, finite and never negative. An http(s)
URL must be absolute, without credentials and with a valid port; reasons never echo it, since a URL may
carry a password. An OP URL must use https unless its host is loopback (OpenID Connect Discovery 1.0 §3).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BeforeValidator

__all__ = ["Duration", "HttpUrl", "NonEmptyStr", "OPUrl", "PositiveDuration", "parse_duration"]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_HINT = "a duration such as 30s, 10m, 8h, 1h30m or 250ms"


class _Problems(ValueError):
    """Raised by a field validator to report problems at keys relative to its model, e.g. a sibling."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in items))
        self.items = items


def parse_duration(value: Any) -> float:
    """`30s`, `8h`, `1h30m`, `250ms`, `2d` or a number of seconds → seconds (float)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be {_DURATION_HINT}")
    if isinstance(value, str):
        text = value.strip()
        sign, text = (-1.0, text[1:]) if text.startswith("-") else (1.0, text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = sign * float(text)
        elif re.fullmatch(rf"(?:{_DURATION_PART.pattern})+", text):
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not {_DURATION_HINT}")
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]


def _http_url(value: str) -> str:
    # The value is not echoed: a URL may carry credentials.
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials (user:password@)")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port lazily)
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761 §6.3
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _op_url(value: str) -> str:
    """OP URLs carry codes, tokens and keys: https, except on loopback for development."""
    parts = urlsplit(value)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise ValueError(
            "must use https: plain http is allowed only for a loopback host (localhost, 127.0.0.1, ::1)"
        )
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
OPUrl = Annotated[str, AfterValidator(_http_url), AfterValidator(_op_url)]


def _origin(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _points_at_gateway(url: str, listen: str | None, public_url: str | None) -> bool:
    """Whether an upstream URL would send requests back into this gateway (a loop)."""
    host, port = _origin(url)
    if public_url is not None and (host, port) == _origin(public_url):
        return True
    if listen is None:
        return False
    listen_host, _, listen_port = listen.rpartition(":")
    listen_host = listen_host.strip("[]").lower()
    if port != int(listen_port):
        return False
    if listen_host in ("0.0.0.0", "::"):  # noqa: S104 (comparing, not binding)
        return _is_loopback(host)
    return host == listen_host or (_is_loopback(host) and _is_loopback(listen_host))


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {exc.msg}") from None
    return pattern


def _email_domain(domain: str) -> str:
    bare = domain.removeprefix("@")  # `@example.com` is tolerated; `user@example.com` is not a domain
    if not bare or "@" in bare or any(c.isspace() for c in bare):
        raise ValueError("must be a domain such as example.com, not an email address")
    return domain


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value
