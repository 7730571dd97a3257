"""The hot-path shortcuts of issue 6 against the real OP, Redis and upstreams: the memoised cookie and
identity never outlive the session, a body still in flight is streamed (its headers are not held
back), and upstream requests are counted by the Forwarder itself."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from gateway.proxy.forward import upstream_client_session
from tests.conftest import GatewayServer
from tests.support.op import browser_login

API = {"Accept": "application/json"}
RELEASE = web.AppKey("release", asyncio.Event)


async def test_sign_out_ends_a_session_whose_cookie_and_identity_were_remembered(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        await browser_login(browser, f"{gw.url}/")
        cookie = {"Cookie": "_oidc_gateway=" + next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway"),
                  **API}
        seen = []
        for _ in range(3):  # the same cookie value again and again: verified once, identity made once
            resp = await gw.client.get("/x", headers=cookie)
            assert resp.status == 200
            seen.append(json.loads(await resp.text())["headers"])
        assert all(dict(h)["X-Auth-Request-User"] == "alice" for h in seen)
        assert (await browser.get(f"{gw.url}/oauth2/sign_out", allow_redirects=False)).status == 302
    assert (await gw.client.get("/x", headers=cookie)).status == 401


@pytest.fixture
async def held_upstream() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """An upstream that sends its headers, then holds the body back until told to go on."""

    async def held(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"X-Held": "yes"})
        response.content_length = 10
        await response.prepare(request)
        if request.path == "/held/part":
            await response.write(b"early")
        await request.app[RELEASE].wait()
        await response.write(b"later" if request.path == "/held/part" else b"later" * 2)
        return response

    app = web.Application()
    app[RELEASE] = asyncio.Event()
    app.router.add_get("/{tail:.*}", held)
    server = GatewayServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), app[RELEASE]
    await server.close()


async def test_headers_of_a_body_still_in_flight_are_not_held_back(
        gateway_factory: Any, held_upstream: tuple[str, asyncio.Event]) -> None:
    url, release = held_upstream
    gw = await gateway_factory(upstreams=[{"path": "/", "url": url}], access={"public_paths": ["^/held"]})
    # The status arrives while the upstream still withholds the body (a deferred header write would
    # hang here until the guard's limit: the body is only released after the headers were seen).
    resp = await asyncio.wait_for(gw.client.get("/held", headers=API), timeout=30)
    assert resp.status == 200 and resp.headers["X-Held"] == "yes"
    # The part of a body that has arrived is passed on while the rest is still withheld.
    part = await asyncio.wait_for(gw.client.get("/held/part", headers=API), timeout=30)
    assert await asyncio.wait_for(part.content.readexactly(5), timeout=30) == b"early"
    release.set()
    assert await resp.read() == b"laterlater"
    assert await part.read() == b"later"


async def test_upstream_requests_are_counted_by_the_forwarder(gateway_factory: Any, echo_upstream: str) -> None:
    gw = await gateway_factory(access={"public_paths": ["^/open"]})
    for _ in range(2):
        assert (await gw.client.get("/open", headers=API)).status == 200
    metrics = await (await gw.client.get("/metrics")).text()
    assert f'oidc_gateway_upstream_requests_total{{status="200",upstream="{echo_upstream}"}} 2.0' in metrics
    assert f'oidc_gateway_upstream_request_duration_seconds_count{{upstream="{echo_upstream}"}} 2.0' in metrics
    assert 'oidc_gateway_http_requests_in_flight 1.0' in metrics  # the scrape itself


@pytest.mark.parametrize("extra_skip", [None, ["X-Unused"]])  # the shortcut, and aiohttp's own path
async def test_upstream_session_adds_no_header_of_its_own(echo_upstream: str, extra_skip: list[str] | None) -> None:
    http = upstream_client_session()
    try:
        async with http.post(f"{echo_upstream}/x", headers={"X-Sent": "1"}, data=b"body",
                             skip_auto_headers=extra_skip) as resp:
            names = {name.lower() for name, _ in (await resp.json())["headers"]}
    finally:
        await http.close()
    assert "x-sent" in names
    assert names.isdisjoint({"user-agent", "accept", "accept-encoding", "content-type"})
