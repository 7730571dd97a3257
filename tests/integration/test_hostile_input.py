"""Hostile input against a real gateway on a real socket: fuzzed (hypothesis) and hand-made bytes.

Each fuzzing test logs in once, then runs a bounded number of hypothesis examples in a worker thread
with blocking sockets (http.client, or raw bytes where http.client would refuse to send them), while
the gateway keeps serving on the test's event loop. Properties: never a 5xx, never a session cookie
or an authenticated answer that was not earned, identity headers only ever the gateway's own, and
requests framed ambiguously never reach the upstream. Login-state flood bounds and header-size
limits (431/414, test_server_protocol.py) are covered elsewhere.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from gateway.auth.redirect import safe_return_path
from tests.conftest import Gateway
from tests.support.op import browser_login

COOKIE = "_oidc_gateway"
FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
IDENTITY_PREFIXES = ("x-auth-request-", "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups",
                     "x-forwarded-preferred-username", "x-forwarded-access-token")


async def logged_in(gw: Gateway) -> str:
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/start")
        assert result.status == 200, result.body
        return next(c.value for c in browser.cookie_jar if c.key == COOKIE)


def port_of(gw: Gateway) -> int:
    return int(gw.url.rpartition(":")[2])


def raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are; read until the server closes (requests say Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
    return b"".join(chunks)


def status_of(response: bytes) -> int:
    assert response.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), response[:200]
    return int(response[9:12])


def get(port: int, target: str, headers: dict[str, str] | None = None,
        method: str = "GET", body: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, target, body=body, headers={"Accept": "application/json", **(headers or {})})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def session_cookies_set(response: http.client.HTTPResponse) -> list[str]:
    return [v for v in response.headers.get_all("Set-Cookie") or []
            if v.startswith(f"{COOKIE}=") and not v.startswith(f"{COOKIE}=;")]


def identity_headers(echoed: bytes) -> list[tuple[str, str]]:
    body = echoed.partition(b"\r\n\r\n")[2]
    seen = json.loads(body)["headers"]
    return sorted((k.lower(), v) for k, v in seen if k.lower().startswith(IDENTITY_PREFIXES))


async def in_thread(fn: Callable[[], None]) -> None:
    await asyncio.to_thread(fn)


# --- callback parameters ---------------------------------------------------------------------------

PARAM = st.sampled_from(["code", "state", "error", "error_description", "iss", "session_state", "id_token",
                         "response", "x"])
VALUE = st.one_of(st.text(max_size=200), st.sampled_from(["", "a" * 5000, "%00", "\x00", "null", "[]", "{}"]))


async def test_fuzzed_callback_never_5xx_and_never_sets_a_session(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    port = port_of(gw)

    @FUZZ
    @given(params=st.lists(st.tuples(PARAM, VALUE), max_size=6), post=st.booleans(),
           login_cookie=st.one_of(st.none(), st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                                                    exclude_characters=';,"\\'), max_size=80)))
    def check(params: list[tuple[str, str]], post: bool, login_cookie: str | None) -> None:
        query = urllib.parse.urlencode(params)
        headers = {"Accept": "text/html"}
        if login_cookie is not None:
            headers["Cookie"] = f"{COOKIE}_login={login_cookie}"
        if post:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            response = get(port, "/oauth2/callback", headers, method="POST", body=query)
        else:
            response = get(port, f"/oauth2/callback?{query}", headers)
        assert response.status < 500, (response.status, params)
        assert not session_cookies_set(response), params

    await in_thread(check)


# --- cookies ---------------------------------------------------------------------------------------


async def test_fuzzed_and_mutated_session_cookies_never_authenticate(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    port = port_of(gw)
    genuine = await logged_in(gw)
    baseline = await asyncio.to_thread(get, port, "/me", {"Cookie": f"{COOKIE}={genuine}"})
    assert baseline.status == 200  # the genuine cookie works: the rejections below are about the mutation

    def mutate(data: Any) -> str:
        kind = data.draw(st.sampled_from(["flip", "truncate", "append", "swap-halves", "random"]))
        if kind == "random":
            return str(data.draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                                       exclude_characters=';,"\\'), max_size=120)))
        if kind == "truncate":
            return genuine[:data.draw(st.integers(0, len(genuine) - 1))]
        if kind == "append":
            return genuine + data.draw(st.text("abcXYZ019-_.=", min_size=1, max_size=8))
        if kind == "swap-halves":
            sid, _, mac = genuine.partition(".")
            return f"{mac}.{sid}"
        i = data.draw(st.integers(0, len(genuine) - 1))
        replacement = data.draw(st.sampled_from("AQgw_-.09"))
        if genuine[i] == replacement:
            replacement = "B" if replacement != "B" else "C"
        return genuine[:i] + replacement + genuine[i + 1:]

    @FUZZ
    @given(data=st.data())
    def check(data: Any) -> None:
        value = mutate(data)
        response = get(port, "/me", {"Cookie": f"{COOKIE}={value}"})
        assert response.status < 500, value
        assert response.status in (401, 400), (response.status, value)  # never the upstream's 200

    await in_thread(check)


# --- rd ----------------------------------------------------------------------------------------------

RD_PREFIX = st.sampled_from(["", "/", "//", "/\\", "\\\\", "http://", "https://", "https://app.example.com",
                             "https://app.example.com.evil.net", "https://evil.net/.example.com", "javascript:",
                             "/\t/", "%2F%2F", "https://user@app.example.com", "https://[::1]", "http:/",
                             "https://sub.example.com:443", "https://sub.example.com:99999", "HTTPS://a.example.com"])
RD = st.builds(lambda prefix, tail: prefix + tail, RD_PREFIX, st.text(max_size=60))
ALLOWED = ["app.example.com", ".example.com"]


def _lands_on(rd: str) -> str | None:
    """Where a browser goes from https://gw.local/oauth2/callback given Location: rd (the host)."""
    return URL("https://gw.local/oauth2/callback").join(URL(rd)).host


@settings(max_examples=400, deadline=None, database=None)
@given(rd=RD)
@example(rd="http://[")  # found by this test: urlsplit raised ValueError (a 500 with redirect_domains)
def test_fuzzed_rd_is_same_origin_or_an_allowed_domain(rd: str) -> None:
    relative = safe_return_path(rd)
    assert relative.startswith("/") and not relative.startswith(("//", "/\\"))
    assert _lands_on(relative) == "gw.local"
    assert all(0x21 <= ord(c) <= 0x7E for c in relative)
    allowed = safe_return_path(rd, ALLOWED)
    host = _lands_on(allowed)
    assert host == "gw.local" or host == "app.example.com" or (host or "").endswith(".example.com"), allowed
    if host != "gw.local":
        assert allowed == rd and "@" not in allowed


async def test_fuzzed_rd_on_start_never_5xx_and_stays_with_the_op(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"redirect_domains": ALLOWED})
    port = port_of(gw)

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(rd=RD)
    @example(rd="http://[")
    def check(rd: str) -> None:
        response = get(port, f"/oauth2/start?{urllib.parse.urlencode({'rd': rd})}", {"Accept": "text/html"})
        assert response.status < 500
        if response.status in (302, 303):
            assert response.headers["Location"].startswith(f"{op.issuer}/"), response.headers["Location"]

    await in_thread(check)


# --- header values, paths and queries as raw bytes --------------------------------------------------

HOSTILE_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\r\n\r\n", b"\r\n"))
HEADER_NAMES = st.sampled_from([b"X-Auth-Request-User", b"X-Auth-Request-Email", b"X-Forwarded-User",
                                b"X-Auth-Request-Groups", b"X-Test", b"Cookie", b"Authorization", b"Accept"])


async def test_fuzzed_header_values_never_5xx_and_identity_headers_stay_ours(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    port = port_of(gw)
    cookie = (await logged_in(gw)).encode()
    base = b"GET /me HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAccept: application/json\r\n"
    baseline = await asyncio.to_thread(raw, port, base + b"Cookie: " + COOKIE.encode() + b"=" + cookie + b"\r\n\r\n")
    assert status_of(baseline) == 200
    ours = identity_headers(baseline)
    assert ("x-auth-request-user", "alice") in ours

    @FUZZ
    @given(name=HEADER_NAMES, value=HOSTILE_BYTES,
           prefix=st.sampled_from([b"", b"alice", b"admin\r\nX-Auth-Request-User: admin"]))
    def check(name: bytes, value: bytes, prefix: bytes) -> None:
        request = (base + b"Cookie: " + COOKIE.encode() + b"=" + cookie + b"\r\n"
                   + name + b": " + prefix + value + b"\r\n\r\n")
        response = raw(port, request)
        code = status_of(response)
        assert code < 500, (code, name, value)
        if code == 200:
            assert identity_headers(response) == ours, (name, value)

    await in_thread(check)


PATH_BYTES = st.lists(st.sampled_from([b"a", b"/", b"%", b"%zz", b"%ff", b"%c0%af", b"%2e%2e", b"\xff", b"\xfe\xfe",
                                       b"\xc3\x28", b"\xed\xa0\x80", b"%00", b"\x00", b"?", b"&", b"=", b"#", b"..",
                                       b";", b"%%", b"\x7f", b"\xe2\x82"]), max_size=12).map(b"".join)


async def test_fuzzed_invalid_utf8_and_percent_encoding_never_5xx(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    port = port_of(gw)
    cookie = (await logged_in(gw)).encode()

    @FUZZ
    @given(path=PATH_BYTES, query=PATH_BYTES, authenticated=st.booleans())
    def check(path: bytes, query: bytes, authenticated: bool) -> None:
        target = b"/" + path + (b"?" + query if query else b"")
        auth = b"Cookie: " + COOKIE.encode() + b"=" + cookie + b"\r\n" if authenticated else b""
        response = raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                       b"Accept: application/json\r\n" + auth + b"\r\n")
        code = status_of(response)
        assert code < 500, (code, target)
        if not authenticated:
            assert code != 200 or target.startswith((b"/oauth2/", b"/healthz", b"/readyz")), (code, target)

    await in_thread(check)


# --- request smuggling ---------------------------------------------------------------------------------

SMUGGLED = b"GET /pub/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
AMBIGUOUS = {
    "cl-and-te": b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
    "te-and-cl": b"Transfer-Encoding: chunked\r\nContent-Length: 60\r\n",
    "two-cl": b"Content-Length: 5\r\nContent-Length: 60\r\n",
    "te-obfuscated": b"Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n",
    "te-list": b"Transfer-Encoding: chunked, identity\r\n",
    "te-space": b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n",
    "te-cl-tab": b"Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n",
    "cl-plus": b"Content-Length: +5\r\n",
}


async def test_ambiguous_framing_never_reaches_the_upstream(gateway_factory: Any) -> None:
    seen: list[tuple[str, str, bytes]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.method, request.path, await request.read()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()
    try:
        gw = await gateway_factory(upstreams=[{"path": "/", "url": str(upstream.make_url("")).rstrip("/")}],
                                   access={"public_paths": ["^/pub"]})
        port = port_of(gw)
        for name, framing in AMBIGUOUS.items():
            seen.clear()
            request = (b"POST /pub/a HTTP/1.1\r\nHost: 127.0.0.1\r\n" + framing + b"\r\n"
                       + b"0\r\n\r\n" + SMUGGLED)
            response = await asyncio.to_thread(raw, port, request, 5.0)
            # A well-formed follow-up on a fresh connection: whatever the first one queued has arrived.
            assert (await asyncio.to_thread(get, port, "/pub/after")).status == 200
            paths = [p for _, p, _ in seen]
            assert "/pub/smuggled" not in paths, (name, seen, response[:300])
            assert paths.count("/pub/a") <= 1 and set(paths) <= {"/pub/a", "/pub/after"}, (name, seen)
            for method, path, body in seen:
                if path == "/pub/a":  # if it got through, it is one request, its body not a request
                    assert method == "POST" and b"HTTP/1.1" not in body, (name, body)
            if response:
                assert status_of(response) in (200, 400, 411, 413, 501), (name, response[:300])
    finally:
        await upstream.close()


# --- slow clients --------------------------------------------------------------------------------------


async def test_slow_header_senders_do_not_block_other_clients(gateway_factory: Any) -> None:
    """200 connections stuck mid-headers (slowloris) while an ordinary request is answered promptly
    (they are cut off at header_timeout: test_server_protocol.py)."""
    gw = await gateway_factory()
    stalled = []
    try:
        for _ in range(200):
            _, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
            stalled.append(writer)
        await asyncio.gather(*(w.drain() for w in stalled))
        started = time.monotonic()
        async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/healthz") as resp:
            assert resp.status == 200
        assert time.monotonic() - started < 2.0
    finally:
        for writer in stalled:
            writer.close()
