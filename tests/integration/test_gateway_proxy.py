"""Proxying through the whole gateway after a real login: websockets, streaming, fail-closed store."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import aiohttp

from tests.conftest import free_port
from tests.fakes.echo import pattern, pattern_sha256
from tests.support.op import browser_login


async def logged_in(gw: Any) -> aiohttp.ClientSession:
    browser = gw.browser()
    result = await browser_login(browser, f"{gw.url}/")
    assert result.status == 200
    return browser


async def test_websocket_round_trip_for_authenticated_user(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with await logged_in(gw) as browser:
        async with browser.ws_connect(f"{gw.url}/__ws", protocols=("echo.v1",)) as ws:
            assert ws.protocol == "echo.v1"
            await ws.send_str("hello")
            assert (await ws.receive()).data == "hello"
            await ws.send_bytes(b"\x00\x01binary")
            assert (await ws.receive()).data == b"\x00\x01binary"
            await ws.send_str("headers")
            seen = {k.lower(): v for k, v in json.loads((await ws.receive()).data)["headers"]}
            assert seen["x-auth-request-user"] == "alice" and seen["authorization"].startswith("Bearer ")
            assert "_oidc_gateway" not in seen.get("cookie", "")
            await ws.send_str("close:4001")
            await ws.receive()
        assert ws.close_code == 4001


async def test_websocket_without_session_is_refused(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with aiohttp.ClientSession() as anonymous:
        try:
            async with anonymous.ws_connect(f"{gw.url}/__ws"):
                raise AssertionError("websocket opened without authentication")
        except aiohttp.WSServerHandshakeError as exc:
            assert exc.status == 401


async def test_streamed_upload_and_download_through_gateway(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    size = 64 * 1024 * 1024
    async with await logged_in(gw) as browser:

        async def body() -> Any:
            for chunk in pattern(size):
                yield chunk

        resp = await browser.post(f"{gw.url}/upload", data=body())
        seen = await resp.json()
        assert seen["body_size"] == size and seen["body_sha256"] == pattern_sha256(size)
        resp = await browser.get(f"{gw.url}/__stream?size={size}")
        digest, got = hashlib.sha256(), 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            digest.update(chunk)
            got += len(chunk)
        assert got == size and digest.hexdigest() == pattern_sha256(size)


async def test_session_store_down_fails_closed(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with await logged_in(gw) as browser:
        cookie = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
    dead = await gateway_factory(session={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    resp = await dead.client.get("/x", headers={"Cookie": f"_oidc_gateway={cookie}", "Accept": "application/json"})
    assert resp.status == 503 and (await resp.json())["error"] == "store_unavailable"
    page = await dead.client.get("/x", headers={"Accept": "text/html"}, allow_redirects=False)
    assert page.status == 503 and "store_unavailable" in await page.text()
    ready = await dead.client.get("/readyz")
    assert ready.status == 503 and "session_store" in (await ready.json())["problems"]


async def test_upstream_down_gives_502_page(gateway_factory: Any) -> None:
    gw = await gateway_factory(upstreams=[{"path": "/", "url": f"http://127.0.0.1:{free_port()}"}])
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/x")
        assert result.status == 502 and "Traceback" not in result.body and "<html" in result.body


async def test_gzip_request_body_forwarded_byte_for_byte(gateway_factory: Any) -> None:
    import gzip

    gw = await gateway_factory()
    compressed = gzip.compress(b'{"hello": "world"}' * 100, mtime=0)
    async with await logged_in(gw) as browser:
        resp = await browser.post(f"{gw.url}/gz", data=compressed, headers={"Content-Encoding": "gzip"})
        seen = await resp.json()
    assert seen["body_size"] == len(compressed)
    assert seen["body_sha256"] == hashlib.sha256(compressed).hexdigest()


async def test_max_body_size_gives_413(gateway_factory: Any) -> None:
    gw = await gateway_factory(max_body_size=1024)
    async with await logged_in(gw) as browser:
        ok = await browser.post(f"{gw.url}/small", data=b"x" * 1024)
        assert ok.status == 200 and (await ok.json())["body_size"] == 1024
        declared = await browser.post(f"{gw.url}/big", data=b"x" * 1025, headers={"Accept": "application/json"})
        assert declared.status == 413 and (await declared.json())["error"] == "payload_too_large"

        async def chunked() -> Any:
            for _ in range(8):
                yield b"y" * 512

        streamed = await browser.post(f"{gw.url}/big", data=chunked(), headers={"Accept": "application/json"})
        assert streamed.status == 413
