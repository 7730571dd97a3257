"""gateway.web.server on a real socket: 431/414/400 refusals (fixed bodies, no echo, nothing secret
logged) and the request-head deadline (slow clients are cut off, slow bodies and idle keep-alive are not)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import Gateway

SECRET = "tok-" + "s3cr3t" * 5  # stands for a token in an oversize header: never echoed, never logged
Start = Callable[..., Awaitable[Gateway]]


def port_of(gw: Gateway) -> int:
    return int(gw.url.rpartition(":")[2])


async def exchange(gw: Gateway, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes; read until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def parse(response: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


def request(target: str = "/healthz", headers: str = "", accept: str = "application/json") -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: {accept}\r\n{headers}"
            "Connection: close\r\n\r\n").encode()


@pytest.mark.parametrize("limit", [None, 16384])
async def test_header_size_limit_is_max_header_size(start_gateway: Start, limit: int | None) -> None:
    gw = await start_gateway(**({} if limit is None else {"max_header_size": limit}))
    size = gw.settings.max_header_size
    status, _, _ = parse(await exchange(gw, request(headers=f"X-Big: {'a' * 4000}\r\n")))
    assert status == 200
    status, _, _ = parse(await exchange(gw, request(headers=f"X-Big: {'a' * (size + 10)}\r\n")))
    assert status == 431
    status, _, _ = parse(await exchange(gw, request(headers=f"X-Big: {'a' * 12000}\r\n")))
    assert status == (200 if limit else 431)


async def test_oversize_header_gets_431_json_without_echo_or_log(start_gateway: Start,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    gw = await start_gateway()
    caplog.set_level(logging.DEBUG)
    big = f"Cookie: _oidc_gateway={SECRET}{'x' * 9000}\r\n"
    status, headers, body = parse(await exchange(gw, request(headers=big)))
    assert status == 431
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(body)
    assert payload["error"] == "request_header_fields_too_large"
    assert payload["request_id"] == headers["x-request-id"]
    assert headers["x-content-type-options"] == "nosniff" and headers["cache-control"] == "no-store"
    assert SECRET.encode() not in body
    assert SECRET not in caplog.text and "Traceback" not in caplog.text
    assert "request_header_fields_too_large" in caplog.text  # the refusal is logged, by kind


async def test_browser_gets_an_html_431_page(start_gateway: Start) -> None:
    gw = await start_gateway()
    status, headers, body = parse(await exchange(gw, request(headers=f"Cookie: a={'x' * 9000}\r\n",
                                                             accept="text/html,*/*")))
    assert status == 431 and headers["content-type"].startswith("text/html")
    assert b"cookies" in body and headers["x-request-id"].encode() in body
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


async def test_too_many_headers_get_431(start_gateway: Start) -> None:
    gw = await start_gateway()
    many = "".join(f"X-H{i}: v\r\n" for i in range(200))
    status, _, body = parse(await exchange(gw, request(headers=many)))
    assert status == 431 and json.loads(body)["error"] == "request_header_fields_too_large"


async def test_overlong_url_gets_414(start_gateway: Start) -> None:
    gw = await start_gateway()
    status, _, body = parse(await exchange(gw, request(target="/healthz?q=" + "a" * 9000)))
    assert status == 414 and json.loads(body)["error"] == "uri_too_long"
    assert b"aaaa" not in body


async def test_malformed_request_gets_400_without_echo(start_gateway: Start, caplog: pytest.LogCaptureFixture) -> None:
    gw = await start_gateway()
    caplog.set_level(logging.DEBUG)
    status, _, body = parse(await exchange(gw, b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad\x01Header: " +
                                           SECRET.encode() + b"\r\n\r\n"))
    assert status == 400 and json.loads(body)["error"] == "bad_request"
    assert SECRET.encode() not in body and SECRET not in caplog.text and "Traceback" not in caplog.text


# --- the request-head deadline -----------------------------------------------------------------------

DEADLINE = 0.5


async def closed_after(gw: Gateway, chunks: list[bytes], gap: float = 0.0) -> float:
    """Open a connection, send the chunks `gap` apart, and return the seconds until the gateway closes
    it (EOF) with no response sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    started = time.monotonic()
    try:
        read = asyncio.ensure_future(reader.read())
        for chunk in chunks:
            writer.write(chunk)
            done, _ = await asyncio.wait({read}, timeout=gap)
            if done:
                break
        assert await asyncio.wait_for(read, 10) == b""
        return time.monotonic() - started
    finally:
        writer.close()


async def test_silent_connection_is_closed_after_header_timeout(start_gateway: Start) -> None:
    gw = await start_gateway(header_timeout=DEADLINE)
    assert DEADLINE <= await closed_after(gw, []) < DEADLINE + 5


async def test_trickled_head_is_cut_off_at_the_deadline(start_gateway: Start) -> None:
    """Bytes arriving every 0.1 s do not extend the deadline (slowloris)."""
    gw = await start_gateway(header_timeout=DEADLINE)
    chunks = [b"GET /healthz HTTP/1.1\r\n"] + [f"X-Slow-{i}: a\r\n".encode() for i in range(100)]
    elapsed = await closed_after(gw, chunks, gap=0.1)
    assert DEADLINE <= elapsed < DEADLINE + 5


async def test_slow_body_and_idle_keep_alive_are_not_cut(start_gateway: Start) -> None:
    """The deadline is for the request head only: a body sent slower than it, and a kept-alive
    connection idle for longer than it, are served."""
    gw = await start_gateway(header_timeout=DEADLINE, access={"public_paths": ["^/"]})
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\nhello")
        with pytest.raises(TimeoutError):  # still open, nothing answered, after twice the deadline
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2 * DEADLINE)
        writer.write(b"world")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        await asyncio.wait_for(reader.readexactly(length), 10)
        with pytest.raises(TimeoutError):  # idle keep-alive beyond the deadline: not closed
            await asyncio.wait_for(reader.read(1), 2 * DEADLINE)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await asyncio.wait_for(reader.read(), 10)).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()


async def test_others_are_served_while_slow_clients_wait_to_be_cut(start_gateway: Start) -> None:
    gw = await start_gateway(header_timeout=DEADLINE)
    stalled = [await asyncio.open_connection("127.0.0.1", port_of(gw)) for _ in range(100)]
    try:
        for _, writer in stalled:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        status, _, _ = parse(await exchange(gw, request()))
        assert status == 200
        closed = await asyncio.gather(*(asyncio.wait_for(r.read(), 10) for r, _ in stalled))
        assert closed == [b""] * len(stalled)  # each cut off at the deadline, with no answer
    finally:
        for _, writer in stalled:
            writer.close()


# --- Expect: 100-continue ------------------------------------------------------------------------------


def expect(path: str, length: int) -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nExpect: 100-continue\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


async def first_status(gw: Gateway, data: bytes) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    writer.write(data)
    line = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
    return int(line.split(b" ")[1]), reader, writer


async def test_no_100_continue_for_a_body_that_will_be_refused(start_gateway: Start) -> None:
    """The client must not start an upload the gateway is going to refuse: over max_body_size (413),
    or without an identity (401); the refusal comes instead of 100 Continue."""
    gw = await start_gateway(max_body_size=1000, access={"public_paths": ["^/pub"]})
    for path, length, refused in (("/pub/x", 10**8, 413), ("/private/x", 10, 401)):
        status, _, writer = await first_status(gw, expect(path, length))
        writer.close()
        assert status == refused, (path, status)


async def test_100_continue_then_the_body_is_forwarded(start_gateway: Start) -> None:
    gw = await start_gateway(max_body_size=1000, access={"public_paths": ["^/pub"]})
    status, reader, writer = await first_status(gw, expect("/pub/x", 5))
    try:
        assert status == 100
        await reader.readuntil(b"\r\n")  # the blank line after the interim response
        writer.write(b"hello")
        status, _, body = parse(await asyncio.wait_for(reader.read(), 10))
        assert status == 200 and json.loads(body)["body_sha256"] == hashlib.sha256(b"hello").hexdigest()
    finally:
        writer.close()


# --- requests the gateway will not pass on: its own answer shape, never aiohttp's plain text ---------


@pytest.mark.parametrize(("head", "status", "code"), [
    ("CONNECT evil.example:443 HTTP/1.1", 404, "not_found"),
    ("OPTIONS * HTTP/1.1", 404, "not_found"),
    ("GET /oauth2/nothing-here HTTP/1.1", 404, "not_found"),
    ("GET /pub/ws HTTP/1.1\r\nUpgrade: websocket", 400, "bad_request"),  # no Sec-WebSocket-Key
])
async def test_refusals_have_the_gateway_shape(start_gateway: Start, head: str, status: int, code: str) -> None:
    gw = await start_gateway(access={"public_paths": ["^/pub"]})
    request = f"{head}\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n".encode()
    got, headers, body = parse(await exchange(gw, request))
    assert got == status and headers["content-type"].startswith("application/json")
    payload = json.loads(body)
    assert payload["error"] == code and payload["request_id"] == headers["x-request-id"]
    browser = request.replace(b"application/json", b"text/html")
    got, headers, body = parse(await exchange(gw, browser))
    assert got == status and headers["content-type"].startswith("text/html") and b"<html" in body
