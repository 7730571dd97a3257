"""The hot-path shortcuts of issue 6 give the same answers as the long way: the direct access line, the
verified-cookie memo, the per-Identity header memo and the batched request ids."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.auth.identity import Identity
from gateway.config import HeaderSettings
from gateway.proxy.headers import REQUEST_ID, IdentityHeaders, downstream_headers, upstream_headers
from gateway.session.cookie import SignedCookie, derive_key
from gateway.web import logs
from gateway.web.logs import (
    ACCESS_LINE,
    ContextFilter,
    access_fields,
    bind_request,
    configure_logging,
    emit_access,
    emit_info,
)
from gateway.web.request_id import RequestIds, sane_request_id

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
ACCESS = logging.getLogger("gateway.access")
FIELDS = {"remote": "127.0.0.1", "method": "GET", "path": "/a b", "status": 200, "bytes": 20, "duration_ms": 1.5,
          "route": "proxy", "request_id": "r-1", "sub": "alice"}


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(saved[0])
    for handler in saved[1]:
        root.addHandler(handler)


def both_ways(fmt: str, message: str, fields: dict[str, object]) -> tuple[str, str]:
    """The line emit_info writes, and the line the same record makes through logging, in `fmt`."""
    direct, ordinary = io.StringIO(), io.StringIO()
    configure_logging("info", fmt, stream=direct)
    assert emit_info(ACCESS, message, dict(fields))
    configure_logging("info", fmt, stream=ordinary)
    ACCESS.info("%s", message, extra=dict(fields))
    return direct.getvalue(), ordinary.getvalue()


def without_time(fmt: str, line: str) -> str:
    if fmt == "json":
        entry = json.loads(line)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("time"))
        return json.dumps(entry)
    if fmt == "logfmt":
        return re.sub(r"^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ", "time=T ", line)
    return re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", "T ", line)


@pytest.mark.parametrize("fmt", ["text", "logfmt", "json"])
def test_direct_access_line_is_the_formatters_line(root_logging: None, fmt: str) -> None:
    direct, ordinary = both_ways(fmt, '127.0.0.1 "GET /a b" 200 20 1.5ms', FIELDS)
    assert direct.endswith("\n") and direct.count("\n") == 1
    assert without_time(fmt, direct.rstrip("\n")) == without_time(fmt, ordinary.rstrip("\n"))


@pytest.mark.parametrize("fmt", ["text", "logfmt", "json"])
def test_direct_line_of_a_multi_line_message_is_the_formatters_line(root_logging: None, fmt: str) -> None:
    direct, ordinary = both_ways(fmt, "first line\nsecond line", FIELDS)
    assert without_time(fmt, direct.rstrip("\n")) == without_time(fmt, ordinary.rstrip("\n"))
    if fmt == "text":  # the fields stay on the message's first line
        assert direct.splitlines()[1] == "second line"


@pytest.mark.parametrize("fmt", ["text", "logfmt", "json"])
def test_direct_access_line_is_redacted(root_logging: None, fmt: str) -> None:
    path = f"/cb/code=SplxlOBeZQQYbYS6WxSbIA/{JWT}"
    direct, ordinary = both_ways(fmt, f'127.0.0.1 "GET {path}" 200 0 1.0ms', {**FIELDS, "path": path})
    for line in (direct, ordinary):
        assert "SplxlOBeZQQYbYS6WxSbIA" not in line and JWT not in line and "[redacted]" in line


# (remote, method, path, status, size, ms, route, request_id, sub): emit_access's arguments.
ACCESS_CASES = [
    ("127.0.0.1", "GET", "/index.html", 200, 612, 1.2345, "proxy", "3f2a9c1b", "248289761001"),
    (None, "POST", "/a b", 404, 0, 0.0, None, None, None),
    ("::1", "GET", '/q"uote\\back', 500, 10, 0.05, "proxy", "r 1", "alice smith"),
    ("127.0.0.1", "GET", "/tab\token=abc", 200, 1, 0.25, "proxy", "r-2", "bob"),
    ("127.0.0.1", "GET", "/new\nline", 200, 1, 0.35, "proxy", "r-3", "bob"),
    ("127.0.0.1", "GET", f"/cb/code=Splx/{JWT}", 302, 0, 99999.95, "callback", "r-4", ""),
    ("10.0.0.1", "DELETE", "/caf\u00e9/\u2603", 204, 0, 1e-9, "proxy", "", "\u00e9"),
    ("127.0.0.1", "GET", "/", 200, 3, 2e15, "proxy", "r-5", "x"),
    ("127.0.0.1", "GET", "/=x", 200, 3, 12.45, "a=b", "r=6", "s=t"),
    ("127.0.0.1", "GET", "/", 200, 3, 1.0, "proxy", "r-7", 12345),  # a value of another type than declared
]


@pytest.mark.parametrize("fmt", ["text", "logfmt", "json"])
@pytest.mark.parametrize("case", ACCESS_CASES)
def test_direct_access_line_is_the_ordinary_records_line(root_logging: None, fmt: str, case: tuple) -> None:
    """emit_access builds its lines itself: each must be what the formatter makes of the record
    AccessLogger would log the ordinary way."""
    direct, ordinary = io.StringIO(), io.StringIO()
    configure_logging("info", fmt, stream=direct)
    assert emit_access(ACCESS, *case)
    logging.getLogger().handlers[0].flush()
    configure_logging("info", fmt, stream=ordinary)
    remote, method, path, status, size, ms = case[:6]
    ACCESS.info(ACCESS_LINE, remote, method, path, status, size, ms, extra=access_fields(*case))
    stamp = r'^\{"time": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"' if fmt == "json" else None
    if stamp is None:
        assert without_time(fmt, direct.getvalue()) == without_time(fmt, ordinary.getvalue())
    else:  # byte for byte, not parsed: the direct JSON line is written by hand
        assert re.sub(stamp, "T", direct.getvalue()) == re.sub(stamp, "T", ordinary.getvalue())
        assert re.match(stamp, direct.getvalue())


def test_direct_access_duration_rounds_as_the_field() -> None:
    """The text and logfmt lines write duration_ms as f"{ms:.1f}", the record's field as round(ms, 1)."""
    import random

    rng = random.Random(6)
    samples = [rng.uniform(0, 10) for _ in range(20000)] + [rng.uniform(0, 1e6) for _ in range(20000)]
    samples += [k / 100 for k in range(100000)] + [k / 1000 + 0.0005 for k in range(20000)]
    assert [f"{ms:.1f}" for ms in samples] == [repr(round(ms, 1)) for ms in samples]


def test_direct_access_line_carries_the_bound_request_id(root_logging: None) -> None:
    request = make_mocked_request("GET", "/x")
    request[REQUEST_ID] = "req-77"
    token = logs._REQUEST.set(None)
    try:
        bind_request(request)
        direct, _ = both_ways("logfmt", "m", {"path": "/x"})
    finally:
        logs._REQUEST.reset(token)
    assert direct.rstrip("\n").endswith("path=/x request_id=req-77")


def test_direct_path_steps_aside_for_any_other_logging_setup(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    root = logging.getLogger()
    extra = logging.StreamHandler(io.StringIO())
    root.addHandler(extra)  # e.g. pytest's caplog, or a second destination
    assert not emit_info(ACCESS, "m", {})
    root.removeHandler(extra)
    ACCESS.addHandler(extra)
    assert not emit_info(ACCESS, "m", {})
    ACCESS.removeHandler(extra)
    root.handlers[0].addFilter(logging.Filter("other"))  # a filter that is not ContextFilter
    assert not emit_info(ACCESS, "m", {})
    configure_logging("warning", "text", stream=stream)
    assert not emit_info(ACCESS, "m", {})
    configure_logging("info", "text", stream=stream)
    root.handlers[0].setFormatter(logging.Formatter("%(message)s"))
    assert not emit_info(ACCESS, "m", {})
    assert stream.getvalue() == ""
    configure_logging("info", "text", stream=stream)
    assert isinstance(root.handlers[0].filters[0], ContextFilter)
    assert emit_info(ACCESS, "m", {}) and stream.getvalue().endswith("gateway.access: m\n")


async def test_lines_of_one_loop_turn_are_written_together_and_in_order(root_logging: None) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    assert emit_info(ACCESS, "first", {}) and emit_info(ACCESS, "second", {})
    assert stream.getvalue() == ""  # held until the end of this turn of the loop
    logging.getLogger("gateway.x").warning("third")  # an ordinary record writes them first
    assert [line.partition(": ")[2] for line in stream.getvalue().splitlines()] == ["first", "second", "third"]
    assert emit_info(ACCESS, "fourth", {})
    loop = asyncio.get_running_loop()
    turn = loop.create_future()
    loop.call_soon(turn.set_result, None)  # queued after the handler's write: done once that has run
    await turn
    assert stream.getvalue().endswith("gateway.access: fourth\n")
    assert emit_info(ACCESS, "fifth", {})
    logging.getLogger().handlers[0].flush()  # as logging.shutdown() at exit
    assert stream.getvalue().endswith("gateway.access: fifth\n")


def test_remembered_cookie_values_verify_as_before() -> None:
    cookie = SignedCookie("_gw", derive_key(b"x" * 32, "session-cookie"), secure=True, max_age=60)
    value = cookie.encode("the-id")
    assert cookie.decode(value) == "the-id" and cookie.decode(value) == "the-id"  # second: remembered
    ident, _, mac = value.rpartition(".")
    forged = f"{ident}.{mac[:-1]}{'A' if mac[-1] != 'A' else 'B'}"
    assert cookie.decode(forged) is None and cookie.decode(forged) is None  # failures are not remembered
    other = SignedCookie("_gw_login", derive_key(b"x" * 32, "session-cookie"), secure=True, max_age=60)
    assert other.decode(value) is None  # a value remembered by one cookie is nothing to another


def test_identity_headers_are_built_once_per_identity_object() -> None:
    mapping = IdentityHeaders(HeaderSettings.model_validate({"claims": {"X-Tenant": "tenant"}}), cache_size=2)
    alice = Identity.from_claims({"sub": "alice", "tenant": "t1"}, access_token="at-1")
    first = mapping(alice)
    assert first == {"X-Auth-Request-User": "alice", "Authorization": "Bearer at-1", "X-Tenant": "t1"}
    assert mapping(alice) is first
    twin = Identity.from_claims({"sub": "alice", "tenant": "t2"}, access_token="at-1")
    assert mapping(twin)["X-Tenant"] == "t2"  # an equal-looking identity is another object: built afresh
    for n in range(3):  # bounded: the oldest entries go
        mapping(Identity(sub=f"u{n}"))
    assert mapping(alice) is not first and mapping(alice) == first


def test_identity_with_an_omitted_header_is_logged_every_time(caplog: pytest.LogCaptureFixture) -> None:
    mapping = IdentityHeaders(HeaderSettings.model_validate({"claims": {"X-Tenant": "tenant"}}))
    odd = Identity.from_claims({"sub": "bob", "tenant": {"nested": 1}})
    with caplog.at_level(logging.WARNING):
        mapping(odd)
        mapping(odd)
    assert sum("mapped header omitted" in r.getMessage() for r in caplog.records) == 2


def test_batched_request_ids_are_fresh_sane_128_bit_hex() -> None:
    ids = RequestIds(batch=4)
    drawn = [ids() for _ in range(10)]  # crosses two refills
    assert len(set(drawn)) == 10
    assert all(re.fullmatch(r"[0-9a-f]{32}", rid) and sane_request_id([rid]) == rid for rid in drawn)


def test_header_rules_hold_the_first_time_and_from_memory() -> None:
    sent = CIMultiDict([("Host", "app"), ("X_Auth_Request_User", "mallory"), ("X-Forwarded-For", "10.0.0.9"),
                        ("X_Forwarded_For", "10.0.0.8"), ("Connection", "x-custom, keep-alive"),
                        ("X-Custom", "hop"), ("X_Request_Id", "client"), ("Authorization", "Basic x"),
                        ("Cookie", "_gw=s; a=1"), ("Expect", "100-continue"), ("Accept", "*/*")])
    alice = Identity(sub="alice", access_token="at")
    runs = [upstream_headers(sent, alice, cookie_names=frozenset({"_gw"}), peer="10.0.0.1", forwarded_proto="https",
                             request_id="rid") for _ in range(2)]
    assert runs[0] == runs[1]
    assert list(runs[0].items()) == [
        ("Cookie", "a=1"), ("Accept", "*/*"), ("X-Real-IP", "10.0.0.1"), ("X-Forwarded-For", "10.0.0.9, 10.0.0.1"),
        ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", "app"), ("X-Request-Id", "rid"),
        ("X-Auth-Request-User", "alice"), ("Authorization", "Bearer at")]


def test_response_headers_keep_order_and_repeats_minus_hop_by_hop() -> None:
    got = CIMultiDict([("Set-Cookie", "a=1"), ("Connection", "keep-alive, X-Hop"), ("X-Hop", "1"),
                       ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"), ("Content-Length", "3"),
                       ("Set-Cookie", "b=2"), ("Content-Type", "text/plain")])
    out = downstream_headers(got)
    assert list(out.items()) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Type", "text/plain")]
    plain = downstream_headers(CIMultiDict([("Connection", "close"), ("Content-Length", "3")]))
    assert list(plain.items()) == [("Content-Length", "3")]


@pytest.mark.parametrize("text", [
    f"hint {JWT}", "code=abc123", "STATE: xyz", "nonce=n-1", "id_token=t", "client_secret=s", "password: p",
    "Cookie: a=b", "set-cookie: a=b", "Authorization: Bearer x", "logout_token=l", "code_verifier=v",
])
def test_redact_quick_check_never_skips_what_the_patterns_mask(text: str) -> None:
    masked = logs._JWT.sub("[redacted]", text)
    masked = logs._SECRET_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}[redacted]", masked)
    masked = logs._SECRET_PAIR.sub(lambda m: f"{m.group(1)}[redacted]", masked)
    assert masked != text and logs.redact(text) == masked
