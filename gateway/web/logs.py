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

import asyncio
import contextvars
import json
import logging
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from typing import IO, Any, Literal

from aiohttp import web

from gateway.proxy.headers import REQUEST_ID

__all__ = ["ACCESS_LINE", "LOG_FORMATS", "ContextFilter", "JSONFormatter", "LineHandler", "LogfmtFormatter",
           "TextFormatter", "access_fields", "bind_request", "configure_logging", "emit_access", "emit_info",
           "formatter_for", "redact"]

LogFormat = Literal["json", "logfmt", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "logfmt", "text")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"

_REQUEST: contextvars.ContextVar[web.BaseRequest | None] = contextvars.ContextVar("oidc_gateway_request",
                                                                                   default=None)
# The attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_REDACTED = "[redacted]"
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*")
# The quotes around keys and values may be JSON-escaped (a JSON or logfmt line quotes a message that
# quotes); a value ends before a quote even when escaped, so that the line stays valid JSON. A backslash
# escape other than \" is part of the value.
_SECRET_PAIR = re.compile(
    r"(?i)\b((?:code|state|nonce|code_verifier|[a-z_]*token|[a-z_]*secret|password|logout_token)\\?[\"']?\s*[=:]"
    r"\s*\\?[\"']?)((?:[^\s&\"',;}\\]|\\[^\s\"'])+)")
_SECRET_HEADER = re.compile(
    r"(?i)\b((?:set-)?cookie|authorization)(\\?[\"']?\s*[=:]\s*\\?[\"']?)((?:[^\"'\n\\]|\\[^\"'])+)")


# Every pattern below needs one of these words (case-insensitively): a line without them is left as is
# without running the regexes (the access log's hot path).
_TRIGGERS = ("eyj", "code", "state", "nonce", "token", "secret", "password", "cookie", "authorization")


def redact(text: str) -> str:
    """Mask anything in `text` that looks like a credential (JWTs, token/code/secret pairs, cookies)."""
    lowered = text.lower()
    if not ("eyj" in lowered or "code" in lowered or "state" in lowered or "nonce" in lowered  # _TRIGGERS,
            or "token" in lowered or "secret" in lowered or "password" in lowered  # spelt out: no generator
            or "cookie" in lowered or "authorization" in lowered):  # per line (the access log's hot path)
        return text
    text = _JWT.sub(_REDACTED, text)
    text = _SECRET_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{_REDACTED}", text)


def bind_request(request: web.BaseRequest) -> None:
    """Make `request` the one whose id goes into the records logged from now on in this task."""
    _REQUEST.set(request)


def _request_id() -> str | None:
    request = _REQUEST.get()
    return request.get(REQUEST_ID) if request is not None else None


class ContextFilter(logging.Filter):
    """Adds `request_id` to records logged while a request is handled (unless the caller set one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = _request_id()
            if request_id:
                record.request_id = request_id
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


_clock_cache: dict[tuple[str, int], str] = {}  # (format, whole second) -> formatted, the current second only


def _second(fmt: str, seconds: int, convert: Callable[[float], time.struct_time]) -> str:
    """time.strftime(fmt, convert(seconds)), remembered for the current second (one line per request)."""
    text = _clock_cache.get((fmt, seconds))
    if text is None:
        if len(_clock_cache) > 8:
            _clock_cache.clear()
        text = _clock_cache[(fmt, seconds)] = time.strftime(fmt, convert(seconds))
    return text


_MILLIS = tuple(f"{ms:03d}" for ms in range(1000))  # "000".."999": a lookup, not a format spec per line


def _timestamp_at(created: float) -> str:
    """ISO 8601 UTC with milliseconds: 2026-11-23T16:02:24.164Z."""
    seconds = int(created)
    return f"{_second('%Y-%m-%dT%H:%M:%S', seconds, time.gmtime)}.{_MILLIS[int((created - seconds) * 1000)]}Z"


def _asctime_at(created: float) -> str:
    """logging.Formatter's default asctime (local time, `,msec`): 2026-11-23 16:02:24,164."""
    seconds = int(created)
    return f"{_second('%Y-%m-%d %H:%M:%S', seconds, time.localtime)},{_MILLIS[int((created - seconds) * 1000)]}"


def _timestamp(record: logging.LogRecord) -> str:
    return _timestamp_at(record.created)


def _exception(formatter: logging.Formatter, record: logging.LogRecord) -> str | None:
    if record.exc_info:
        return formatter.formatException(record.exc_info)
    return record.exc_text or None


_JSON = json.JSONEncoder(default=str, ensure_ascii=False)  # json.dumps(..., default=str, ensure_ascii=False),
# without a new encoder per line
_quote: Callable[[str], str] = json.encoder.encode_basestring  # its string literal (C), non-ASCII kept


def _json_line(created: float, level: str, name: str, message: str, fields: Mapping[str, Any],
               exception: str | None = None) -> str:
    entry: dict[str, Any] = {"time": _timestamp_at(created), "level": level, "logger": name, "message": message}
    entry.update(fields)
    if exception is not None:
        entry["exception"] = exception
    return redact(_JSON.encode(entry))


def _logfmt_line(created: float, level: str, name: str, message: str, fields: Mapping[str, Any],
                 exception: str | None = None) -> str:
    pairs: dict[str, Any] = {"time": _timestamp_at(created), "level": level, "logger": name, "msg": message,
                             **fields}
    if exception is not None:
        pairs["exception"] = exception
    return redact(_pairs(pairs))


class JSONFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", ...extra fields, "exception"?} on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return _json_line(record.created, record.levelname.lower(), record.name, record.getMessage(),
                          _fields(record), _exception(self, record))


_NEEDS_QUOTES = re.compile(r'[ ="\\\n\t]')


def _logfmt_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value if value and _NEEDS_QUOTES.search(value) is None else json.dumps(value, ensure_ascii=False)
    if kind is int or kind is float:
        return repr(value)  # the access log's numbers: no JSON encoder per field (hot path)
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
    if text and _NEEDS_QUOTES.search(text) is None:
        return text
    return json.dumps(text, ensure_ascii=False)


def _value(value: Any) -> str:
    """_logfmt_value(value), with the plain string inline (access log fields: one line per request).
    isalnum() first: ids, methods, route names pass without a regex search (a letter or digit is never
    one of the characters that need quotes)."""
    if type(value) is str and value and (value.isalnum() or _NEEDS_QUOTES.search(value) is None):
        return value
    return _logfmt_value(value)


def _pairs(fields: Mapping[str, Any]) -> str:
    return " ".join([f"{key}={_value(value)}" for key, value in fields.items()])


class LogfmtFormatter(logging.Formatter):
    """time=... level=... logger=... msg="..." key=value ... on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return _logfmt_line(record.created, record.levelname.lower(), record.name, record.getMessage(),
                            _fields(record), _exception(self, record))


class TextFormatter(logging.Formatter):
    """The classic line for a terminal, with the extra fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(_with_fields(super().format(record), _fields(record)))


def _with_fields(line: str, fields: Mapping[str, Any]) -> str:
    """`line` with the fields appended as key=value to its first line (the message's)."""
    if not fields:
        return line
    if "\n" not in line:  # the usual one-line case: no partition
        return f"{line} {_pairs(fields)}"
    head, sep, tail = line.partition("\n")
    return f"{head} {_pairs(fields)}{sep}{tail}"


def _text_line(created: float, level: str, name: str, message: str, fields: Mapping[str, Any]) -> str:
    """TextFormatter's line for a record without exception or stack (TEXT_FORMAT, then the fields)."""
    return redact(_with_fields(f"{_asctime_at(created)} {level.upper()} {_PID.pid} {name}: {message}", fields))


class _Pid:
    """os.getpid(), asked once per process (workers are spawned: each has its own module state)."""

    def __init__(self) -> None:
        self._pid: int | None = None

    @property
    def pid(self) -> int:
        if self._pid is None:
            self._pid = os.getpid()
        return self._pid


_PID = _Pid()
_DIRECT = {JSONFormatter: _json_line, LogfmtFormatter: _logfmt_line, TextFormatter: _text_line}


def _direct_handler(logger: logging.Logger) -> LineHandler | None:
    """The one handler configure_logging() installed, when an INFO record of `logger` would reach it
    and nothing else: no other or further handler anywhere on the way, no logger filter, no level or
    `logging.disable` that drops INFO, no formatter or filter of another class. Else None."""
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or root.filters or logger.filters or root.manager.disable >= logging.INFO:
        return None
    node: Any = logger
    while node is not root:
        if node.handlers or not node.propagate:
            return None
        node = node.parent
    handler = handlers[0]
    if type(handler) is not LineHandler or type(handler.formatter) not in _DIRECT \
            or handler.level > logging.INFO or not logger.isEnabledFor(logging.INFO):
        return None
    for kind in handler.filters:  # a loop, not any(<generator>): this runs once per request
        if type(kind) is not ContextFilter:
            return None
    return handler


def emit_info(logger: logging.Logger, message: str, fields: dict[str, Any]) -> bool:
    """Write an INFO line for `logger` straight to the one handler configure_logging() installed: the
    same line its formatter would make of the record (with ContextFilter's request id), without the
    record, the logger tree walk and the generic formatter.

    False, having written nothing, whenever logging is set up any other way (_direct_handler): the
    caller then logs the ordinary way. The line is written with the others of this turn of the event
    loop (LineHandler).
    """
    handler = _direct_handler(logger)
    if handler is None:
        return False
    if handler.filters and fields.get("request_id") is None:
        request_id = _request_id()
        if request_id:
            fields["request_id"] = request_id
    handler.add_line(_DIRECT[type(handler.formatter)](time.time(), "info", logger.name, message, fields))
    return True


ACCESS_LINE = '%s "%s %s" %d %d %.1fms'  # remote, method, path, status, size, milliseconds


def access_fields(remote: str | None, method: str, path: str, status: int, size: int, ms: float,
                  route: str | None, request_id: str | None, sub: str | None) -> dict[str, Any]:
    """The access line's fields, in this order, each only when it has a value."""
    fields: dict[str, Any] = {"remote": remote} if remote is not None else {}
    fields.update(method=method, path=path, status=status, bytes=size, duration_ms=round(ms, 1))
    if route is not None:
        fields["route"] = route
    if request_id is not None:
        fields["request_id"] = request_id
    if sub is not None:
        fields["sub"] = sub
    return fields


def emit_access(logger: logging.Logger, remote: str | None, method: str, path: str, status: int, size: int,
                ms: float, route: str | None, request_id: str | None, sub: str | None) -> bool:
    """emit_info() of the access line (ACCESS_LINE with access_fields()): the access log's hot path.

    The line is made in one step, without a record or the fields' dict: the same line as the
    formatter's, which tests/unit/test_perf_caches.py checks in every format. Anything unusual (a text
    message of more than one line, a value of another type) takes emit_info's way.
    """
    handler = _direct_handler(logger)
    if handler is None:
        return False
    if request_id is None and handler.filters:
        request_id = _request_id() or None
    message = f'{remote} "{method} {path}" {status} {size} {ms:.1f}ms'  # ACCESS_LINE
    kind = type(handler.formatter)
    # f"{ms:.1f}" is repr(round(ms, 1)) below 1e15: both round the exact binary value to one decimal.
    if (kind is TextFormatter and "\n" in message) or type(status) is not int or type(size) is not int \
            or not 0 <= ms < 1e15 or (kind is JSONFormatter and not _all_str(remote, method, path, route, request_id,
                                                                           sub)):
        return emit_info(logger, message, access_fields(remote, method, path, status, size, ms, route, request_id, sub))
    if kind is JSONFormatter:  # json.dumps' separators and string escapes (ensure_ascii=False)
        before = "" if remote is None else f'"remote": {_quote(remote)}, '
        after = ("" if route is None else f', "route": {_quote(route)}') + \
            ("" if request_id is None else f', "request_id": {_quote(request_id)}') + \
            ("" if sub is None else f', "sub": {_quote(sub)}')
        line = (f'{{"time": "{_timestamp_at(time.time())}", "level": "info", "logger": {_quote(logger.name)}, '
                f'"message": {_quote(message)}, {before}"method": {_quote(method)}, "path": {_quote(path)}, '
                f'"status": {status}, "bytes": {size}, "duration_ms": {ms:.1f}{after}}}')
        handler.add_line(redact(line))
        return True
    fields = (f"{'' if remote is None else 'remote=' + _value(remote) + ' '}method={_value(method)} "
              f"path={_value(path)} status={status} bytes={size} duration_ms={ms:.1f}"
              f"{'' if route is None else ' route=' + _value(route)}"
              f"{'' if request_id is None else ' request_id=' + _value(request_id)}"
              f"{'' if sub is None else ' sub=' + _value(sub)}")
    if kind is TextFormatter:
        line = f"{_asctime_at(time.time())} INFO {_PID.pid} {logger.name}: {message} {fields}"
    else:
        line = f"time={_timestamp_at(time.time())} level=info logger={_value(logger.name)} msg={_value(message)} " \
               f"{fields}"
    handler.add_line(redact(line))
    return True


def _all_str(*values: object) -> bool:
    """Every value a str or None (a loop: once per JSON access line)."""
    for value in values:
        if value is not None and type(value) is not str:
            return False
    return True


class LineHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """configure_logging()'s handler: a StreamHandler that also takes finished lines (emit_info) and
    writes those together, once per turn of the event loop (one write for the requests that ended in
    that turn, not one each). A record handled the ordinary way first writes the lines taken before
    it, so the order of lines is kept; flush() (and logging.shutdown() at exit) writes them too."""

    _MAX_PENDING = 128  # lines; a long turn writes as it goes

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def add_line(self, line: str) -> None:
        pending = self._pending
        pending.append(line)
        if len(pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.write_lines)
            except RuntimeError:  # no loop running here: write at once
                self.write_lines()
        elif len(pending) >= self._MAX_PENDING:
            self.write_lines()

    def write_lines(self) -> None:
        if not self._pending:
            return
        self.acquire()
        try:
            lines, self._pending = self._pending, []
            stream = self.stream
            stream.write(self.terminator.join(lines) + self.terminator)
            stream.flush()
        except Exception:  # noqa: BLE001 - as StreamHandler.emit: a logging failure never fails a request
            if logging.raiseExceptions:  # what Handler.handleError reports, for lines without a record
                traceback.print_exc(file=sys.stderr)
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending:
            self.write_lines()
        super().emit(record)

    def flush(self) -> None:
        self.write_lines()
        super().flush()


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
    handler = LineHandler(stream if stream is not None else sys.stderr)
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
