"""Finding: one result of one doctor check, with the fix when something is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

__all__ = ["Finding", "Status", "fail", "info", "ok", "safe_url", "warn"]

Status = Literal["ok", "info", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Finding:
    status: Status
    check: str
    message: str
    fix: str | None = None


def ok(check: str, message: str) -> Finding:
    return Finding("ok", check, message)


def info(check: str, message: str) -> Finding:
    return Finding("info", check, message)


def warn(check: str, message: str, fix: str) -> Finding:
    return Finding("warn", check, message, fix)


def fail(check: str, message: str, fix: str) -> Finding:
    return Finding("fail", check, message, fix)


def safe_url(url: str) -> str:
    """The URL without user info and query: what may be printed."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
