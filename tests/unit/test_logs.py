"""Structured log lines (json, logfmt, text), the request id on every record, and redaction."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.proxy.headers import REQUEST_ID
from gateway.web import logs
from gateway.web.logs import (
    ContextFilter,
    JSONFormatter,
    LogfmtFormatter,
    TextFormatter,
    bind_request,
    configure_logging,
    redact,
)

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


def record(msg: str = "login succeeded", *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("gateway.auth.flow", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_json_line_has_the_standard_keys_and_the_extra_fields() -> None:
    line = JSONFormatter().format(record("login %s", "succeeded", sub="alice", request_id="r-1"))
    entry = json.loads(line)
    assert entry["level"] == "info" and entry["logger"] == "gateway.auth.flow"
    assert entry["message"] == "login succeeded"
    assert entry["sub"] == "alice" and entry["request_id"] == "r-1"
    assert entry["time"].endswith("Z") and "\n" not in line


def test_json_line_carries_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    entry = json.loads(JSONFormatter().format(rec))
    assert "ValueError: boom" in entry["exception"]


def test_logfmt_quotes_only_what_needs_quoting() -> None:
    line = LogfmtFormatter().format(record("upstream timed out", upstream="/api", duration_ms=12.5))
    assert 'msg="upstream timed out"' in line
    assert "upstream=/api" in line and "duration_ms=12.5" in line and "level=info" in line


def test_text_line_appends_the_fields() -> None:
    line = TextFormatter().format(record("login succeeded", sub="alice"))
    assert line.endswith("gateway.auth.flow: login succeeded sub=alice")


@pytest.mark.parametrize("text, secret", [
    (f"id_token_hint={JWT}&state=x", JWT),
    ("GET /oauth2/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=af0ifjsldkj", "SplxlOBeZQQYbYS6WxSbIA"),
    ("GET /oauth2/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=af0ifjsldkj", "af0ifjsldkj"),
    ('{"refresh_token": "8xLOxBtZp8"}', "8xLOxBtZp8"),
    ("client_secret=gateway-secret-0123", "gateway-secret-0123"),
    ("Cookie: _oidc_gateway=abc.def", "abc.def"),
    ("authorization: Bearer opaque-access-token", "opaque-access-token"),
])
def test_redact_masks_credentials_whatever_their_source(text: str, secret: str) -> None:
    assert secret not in redact(text)
    assert "[redacted]" in redact(text)


@pytest.mark.parametrize("message, secret", [
    ('GET /cb?token=abc"def 200', "abc"),  # a quote right after the secret: its JSON escape
    ('got {"refresh_token": "8xLOxBtZp8"} back', "8xLOxBtZp8"),  # JSON-escaped quotes around key and value
    ("GET /x?code=ab\\cd&x=1", "ab\\\\cd"),  # an escaped backslash inside the value: all of it
    ('header Cookie: _oidc_gateway=abc.def" next', "abc.def"),
    ('sent {"Authorization": "Bearer opaque-1"}', "opaque-1"),
])
@pytest.mark.parametrize("formatter", [JSONFormatter, LogfmtFormatter])
def test_redacted_json_and_logfmt_lines_stay_well_formed(message: str, secret: str, formatter: type) -> None:
    """Redaction runs on the finished line, where a quoted message's quotes are escaped: the secret is
    masked and the line still parses (a broken JSON line would be dropped by a log shipper)."""
    line = formatter().format(record("%s", message, path=message))
    assert secret not in line and "[redacted]" in line
    if formatter is JSONFormatter:
        entry = json.loads(line)
        assert "[redacted]" in entry["message"] and "[redacted]" in entry["path"]
    else:
        for key in ("msg", "path"):
            quoted = re.search(key + r'=("(?:[^"\\]|\\.)*")(?: |$)', line)
            assert quoted is not None and "[redacted]" in json.loads(quoted.group(1))


def test_redact_keeps_ordinary_text() -> None:
    text = "token endpoint answered HTTP 400 error=invalid_grant; refresh token rejected"
    assert redact(text) == text


@pytest.fixture
def bound() -> Iterator[None]:
    request = make_mocked_request("GET", "/x")
    request[REQUEST_ID] = "req-42"
    token = logs._REQUEST.set(None)
    bind_request(request)
    yield
    logs._REQUEST.reset(token)


def test_records_logged_while_a_request_is_handled_carry_its_id(bound: None) -> None:
    rec = record()
    assert ContextFilter().filter(rec)
    assert rec.request_id == "req-42"  # type: ignore[attr-defined]


def test_a_record_outside_any_request_has_no_request_id() -> None:
    rec = record()
    ContextFilter().filter(rec)
    assert not hasattr(rec, "request_id")


def test_configure_logging_replaces_handlers_and_sets_level_and_format() -> None:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    stream = io.StringIO()
    try:
        configure_logging("warning", "json", stream=stream)
        logging.getLogger("gateway.test").info("dropped")
        logging.getLogger("gateway.test").warning("kept", extra={"upstream": "/api"})
        (handler,) = root.handlers
        assert root.level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.setLevel(saved[0])
        for handler in saved[1]:
            root.addHandler(handler)
    (line,) = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == "kept" and json.loads(line)["upstream"] == "/api"
