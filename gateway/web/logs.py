"""Structured logging: one line per record as JSON, logfmt or text, with the request id.

Every record carries time, level, logger and message, the fields the caller put in `extra=`, and
`request_id` when it was logged while a request was handled (bind_request() in the metrics middleware
remembers the request in a context variable; aiohttp runs each request in its own task, so the
variable never leaks to another request). The id itself is gateway.web.request_id's
(`request[REQUEST_ID]`); this module never invents one.

What it trusts: nothing. The gateway never passes a token, code, cookie or secret to a logger (see
the style guide); as a second line of defence every formatted line goes through redact(), which
masks JWT-shaped strings and the values of `code=`, `state=`, `*token=`, `*secret=`, `password=`
pairs and of Cookie / Authorization headers, wherever they come from (a third-party library's
message, an exception's text).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any, Literal

from aiohttp import web

from gateway.proxy.headers import REQUEST_ID

__all__ = ["LOG_FORMATS", "ContextFilter", "JSONFormatter", "LogfmtFormatter", "TextFormatter", "bind_request",
           "configure_logging", "formatter_for", "redact"]

LogFormat = Literal["json", "logfmt", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "logfmt", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"

_REQUEST: contextvars.ContextVar[web.BaseRequest | None] = contextvars.ContextVar("oidc_gateway_request",
                                                                                   default=None)
# The attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_REDACTED = "[redacted]"
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:code|state|nonce|code_verifier|[a-z_]*token|[a-z_]*secret|password|logout_token)[\"']?\s*[=:]\s*"
    r"[\"']?)([^\s&\"',;}]+)")
_SECRET_HEADER = re.compile(r"(?i)\b((?:set-)?cookie|authorization)(\s*[=:]\s*[\"']?)([^\"'\n]+)")


# Every pattern below needs one of these words (case-insensitively): a line without them is left as is
# without running the regexes (the access log's hot path).
_TRIGGERS = ("eyj", "code", "state", "nonce", "token", "secret", "password", "cookie", "authorization")


def redact(text: str) -> str:
    """Mask anything in `text` that looks like a credential (JWTs, token/code/secret pairs, cookies)."""
    lowered = text.lower()
    if not any(trigger in lowered for trigger in _TRIGGERS):
        return text
    text = _JWT.sub(_REDACTED, text)
    text = _SECRET_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{_REDACTED}", text)


def bind_request(request: web.BaseRequest) -> None:
    """Make `request` the one whose id goes into the records logged from now on in this task."""
    _REQUEST.set(request)


class ContextFilter(logging.Filter):
    """Adds `request_id` to records logged while a request is handled (unless the caller set one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        request = _REQUEST.get()
        if request is not None and getattr(record, "request_id", None) is None:
            request_id = request.get(REQUEST_ID)
            if request_id:
                record.request_id = request_id
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


class JSONFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", ...extra fields, "exception"?} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname.lower(),
                                 "logger": record.name, "message": record.getMessage()}
        entry.update(_fields(record))
        if (exc := _exception(self, record)) is not None:
            entry["exception"] = exc
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


_PLAIN = re.compile(r'[^ ="\\\n\t]+')


def _logfmt_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)  # the access log's numbers: no JSON encoder per field (hot path)
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if _PLAIN.fullmatch(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def _pairs(fields: Mapping[str, Any]) -> str:
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields.items())


class LogfmtFormatter(logging.Formatter):
    """time=... level=... logger=... msg="..." key=value ... on one line."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {"time": _timestamp(record), "level": record.levelname.lower(),
                                  "logger": record.name, "msg": record.getMessage(), **_fields(record)}
        if (exc := _exception(self, record)) is not None:
            fields["exception"] = exc
        return redact(_pairs(fields))


class TextFormatter(logging.Formatter):
    """The classic line for a terminal, with the extra fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            head, sep, tail = line.partition("\n")  # the fields stay on the message's line
            line = f"{head} {_pairs(fields)}{sep}{tail}"
        return redact(line)


def formatter_for(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JSONFormatter()
    if fmt == "logfmt":
        return LogfmtFormatter()
    return TextFormatter()


def configure_logging(level: str, fmt: str = "text", *, stream: IO[str] | None = None) -> None:
    """Root logging to stderr (or `stream`) at `level` in `fmt`; replaces any handler installed before.

    Called by the CLI process and by every worker process (they are spawned, so each sets up its own).
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter_for(fmt))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # No format here uses the caller's file/line or thread names: skip collecting them per record
    # (the stack walk alone is a fifth of an access line's cost).
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # type: ignore[attr-defined]
