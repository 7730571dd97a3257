"""The Forwarder end to end: real sockets, a real echo upstream, the proxy in a minimal app."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import resource
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from aiohttp.typedefs import Handler
from yarl import URL

from gateway.auth.identity import IDENTITY, Identity
from gateway.config import UpstreamSettings
from gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from gateway.proxy.forward import Forwarder, upstream_client_session
from gateway.proxy.routes import UpstreamTable
from gateway.proxy.upstream import LeanClient
from tests.fakes.echo import GZIP_BODY, GZIP_PLAIN, WS_CLOSES, echo_app, pattern, pattern_sha256

MiB = 1024 * 1024
BIG = 256 * MiB
MEMORY_BOUND = 64 * MiB
ALICE = Identity(sub="alice", email="alice@example.com", username="alice.l", groups=("a", "b"),
                 access_token="at-123")
COOKIE_NAMES = frozenset({"_gw", "_gw_login"})
FORWARDER = web.AppKey("forwarder", Forwarder)
LEAN = web.AppKey("lean", LeanClient)

Client = TestClient[web.Request, web.Application]
ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[Client]]


# --- the app under test: identity and error rendering stand in for the real middleware -----------


@web.middleware
async def render_gateway_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        return web.json_response({"error": exc.code, "detail": exc.detail}, status=exc.status)


@web.middleware
async def fixed_identity(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/public"):
        request[IDENTITY] = ALICE
    return await handler(request)


def proxy_app(upstreams: list[dict[str, Any]], *, lean: bool, pool_limit: int = 512) -> web.Application:
    """The proxy with both upstream clients (bodiless requests take the lean one), or aiohttp's alone."""
    settings = [UpstreamSettings(**spec) for spec in upstreams]

    async def forwarder_ctx(app: web.Application) -> AsyncIterator[None]:
        http = upstream_client_session(limit=pool_limit)
        app[LEAN] = LeanClient(limit=pool_limit)
        app[FORWARDER] = Forwarder(UpstreamTable(settings), http, cookie_names=COOKIE_NAMES,
                                   forwarded_proto="https", lean=app[LEAN] if lean else None)
        yield
        await app[LEAN].close()
        await http.close()

    async def handler(request: web.Request) -> web.StreamResponse:
        return await request.app[FORWARDER](request)

    app = web.Application(middlewares=[render_gateway_errors, fixed_identity])
    app.cleanup_ctx.append(forwarder_ctx)
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


class ProxyServer(TestServer):
    """The proxy as the gateway must be served: request bodies handed over as sent (no decoding)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return web.AppRunner(self.app, auto_decompress=False, **kwargs)


def base(server: BaseTestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def echo(aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(echo_app("main"))


@pytest.fixture(params=[True, False], ids=["lean", "aiohttp"])
def lean(request: pytest.FixtureRequest) -> bool:
    """Every proxy test runs with the lean upstream client in use, and with aiohttp's alone."""
    return bool(request.param)


@pytest.fixture
async def proxy(aiohttp_client: ClientFactory, echo: TestServer, lean: bool) -> Client:
    app = proxy_app([{"path": "/", "url": base(echo)},
                     {"path": "/nows", "url": base(echo), "websockets": False},
                     {"path": "/slow", "url": base(echo), "read_timeout": 0.2}], lean=lean)
    return await aiohttp_client(ProxyServer(app))


async def seen(response: aiohttp.ClientResponse) -> dict[str, Any]:
    assert response.status == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


def values(echoed: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echoed["headers"] if k.lower() == name.lower()]


# --- what the upstream receives --------------------------------------------------------------------


async def test_identity_reaches_upstream_and_spoofed_headers_do_not(proxy: Client) -> None:
    headers = [("X-Auth-Request-User", "mallory"), ("x-auth-request-email", "mallory@evil.example"),
               ("X-AUTH-REQUEST-GROUPS", "admins"), ("X_Auth_Request_Preferred_Username", "mallory"),
               ("Authorization", "Bearer client-token"), ("Cookie", "theme=dark; _gw=session-secret; lang=en"),
               ("Cookie", "_gw_login=pending"), ("X-Custom", "kept")]
    echoed = await seen(await proxy.get("/app/page", headers=headers))
    assert values(echoed, "X-Auth-Request-User") == ["alice"]
    assert values(echoed, "X-Auth-Request-Email") == ["alice@example.com"]
    assert values(echoed, "X-Auth-Request-Preferred-Username") == ["alice.l"]
    assert values(echoed, "X-Auth-Request-Groups") == ["a,b"]
    assert values(echoed, "Authorization") == ["Bearer at-123"]
    assert values(echoed, "Cookie") == ["theme=dark; lang=en"]
    assert values(echoed, "X-Custom") == ["kept"]
    everything = json.dumps(echoed["headers"])
    for secret in ("mallory", "admins", "client-token", "session-secret", "pending", "X_Auth"):
        assert secret not in everything


async def test_public_path_forwards_client_authorization_but_no_identity(proxy: Client) -> None:
    echoed = await seen(await proxy.get("/public/x", headers={"Authorization": "Basic Zm9vOmJhcg==",
                                                              "X-Auth-Request-User": "mallory"}))
    assert values(echoed, "Authorization") == ["Basic Zm9vOmJhcg=="]
    assert not [k for k, _ in echoed["headers"] if k.lower().startswith("x-auth-request-")]


async def test_path_and_raw_query_are_forwarded_verbatim(proxy: Client, echo: TestServer) -> None:
    url = URL(f"{base(proxy.server)}/a%2Fb/caf%C3%A9?q=%20x&b=%2F+y&a=1&a=2", encoded=True)
    echoed = await seen(await proxy.session.get(url))
    assert echoed["raw_path"] == "/a%2Fb/caf%C3%A9?q=%20x&b=%2F+y&a=1&a=2"
    assert echoed["query_string"] == "q=%20x&b=%2F+y&a=1&a=2"


async def test_dot_segments_are_rejected(proxy: Client) -> None:
    for path in ("/public/../admin", "/public/%2e%2e/admin", "/public/..;x/admin", "/./admin"):
        response = await proxy.session.get(URL(f"{base(proxy.server)}{path}", encoded=True))
        assert response.status == 400, path
    echoed = await seen(await proxy.get("/.well-known/x..y/..."))  # dots inside names are fine
    assert echoed["path"] == "/.well-known/x..y/..."


async def test_forwarded_headers(proxy: Client, echo: TestServer) -> None:
    echoed = await seen(await proxy.get("/x", headers={
        "Host": "app.example.com", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": "evil.example", "X-Real-IP": "6.6.6.6"}))
    assert values(echoed, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert values(echoed, "X-Forwarded-Proto") == ["https"]
    assert values(echoed, "X-Forwarded-Host") == ["app.example.com"]
    assert values(echoed, "X-Real-IP") == ["127.0.0.1"]
    assert values(echoed, "Host") == [f"{echo.host}:{echo.port}"]


async def test_pass_host_header(aiohttp_client: ClientFactory, echo: TestServer, lean: bool) -> None:
    proxy = await aiohttp_client(proxy_app([{"path": "/", "url": base(echo), "pass_host_header": True}], lean=lean))
    echoed = await seen(await proxy.get("/x", headers={"Host": "app.example.com"}))
    assert values(echoed, "Host") == ["app.example.com"]


async def test_hop_by_hop_headers_do_not_reach_upstream(proxy: Client) -> None:
    echoed = await seen(await proxy.get("/x", headers={
        "Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "timeout=5", "TE": "trailers",
        "Proxy-Authorization": "Basic eA==", "Proxy-Connection": "keep-alive"}))
    names = {k.lower() for k, _ in echoed["headers"]}
    assert names.isdisjoint({"x-hop", "keep-alive", "te", "proxy-authorization", "proxy-connection"})
    assert values(echoed, "Connection") == []


async def test_no_headers_are_invented(proxy: Client) -> None:
    response = await proxy.session.get(proxy.make_url("/x"), skip_auto_headers=("User-Agent", "Accept",
                                                                                  "Accept-Encoding"))
    names = {k.lower() for k, _ in (await seen(response))["headers"]}
    assert names.isdisjoint({"user-agent", "accept", "accept-encoding", "content-type"})


async def test_longest_prefix_routing(aiohttp_server: ServerFactory, aiohttp_client: ClientFactory,
                                      lean: bool) -> None:
    root = await aiohttp_server(echo_app("root"))
    api = await aiohttp_server(echo_app("api"))
    proxy = await aiohttp_client(proxy_app([{"path": "/", "url": base(root)},
                                            {"path": "/api", "url": base(api) + "/base"}], lean=lean))
    expectations = {"/api/users?id=1": ("api", "/base/api/users?id=1"), "/api": ("api", "/base/api"),
                    "/apix": ("root", "/apix"), "/": ("root", "/")}
    for path, (upstream, raw_path) in expectations.items():
        echoed = await seen(await proxy.get(path))
        assert (echoed["upstream"], echoed["raw_path"]) == (upstream, raw_path), path


# --- bodies: streamed, never buffered ----------------------------------------------------------------


@dataclass
class MemoryProbe:
    traced_peak: int = 0
    rss_growth: int = 0


@contextmanager
def memory_probe() -> Iterator[MemoryProbe]:
    """Peak Python allocations (tracemalloc) and peak-RSS growth (ru_maxrss) while the block runs."""
    probe = MemoryProbe()
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tracemalloc.start()
    try:
        yield probe
    finally:
        probe.traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        probe.rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
        print(f"\nmemory: traced peak {probe.traced_peak / MiB:.1f} MiB, "
              f"peak RSS growth {probe.rss_growth / MiB:.1f} MiB")


async def body(size: int) -> AsyncIterator[bytes]:
    for chunk in pattern(size):
        yield chunk


async def test_large_upload_is_streamed(proxy: Client) -> None:
    with memory_probe() as probe:
        response = await proxy.post("/upload", data=body(BIG), headers={"Content-Length": str(BIG)})
        echoed = await seen(response)
    assert echoed["body_size"] == BIG
    assert echoed["body_sha256"] == pattern_sha256(BIG)
    assert values(echoed, "Content-Length") == [str(BIG)]
    assert values(echoed, "Transfer-Encoding") == []
    assert probe.traced_peak < MEMORY_BOUND
    assert probe.rss_growth < MEMORY_BOUND


async def test_large_download_is_streamed(proxy: Client) -> None:
    digest, size = hashlib.sha256(), 0
    with memory_probe() as probe:
        response = await proxy.get(f"/__stream?size={BIG}")
        assert response.status == 200
        assert response.headers["Content-Length"] == str(BIG)
        async for chunk in response.content.iter_chunked(64 * 1024):
            digest.update(chunk)
            size += len(chunk)
    assert size == BIG
    assert digest.hexdigest() == pattern_sha256(BIG)
    assert probe.traced_peak < MEMORY_BOUND
    assert probe.rss_growth < MEMORY_BOUND


async def test_chunked_upload_stays_chunked(proxy: Client) -> None:
    echoed = await seen(await proxy.put("/upload", data=body(3 * MiB + 5)))
    assert (echoed["body_size"], echoed["body_sha256"]) == (3 * MiB + 5, pattern_sha256(3 * MiB + 5))
    assert values(echoed, "Transfer-Encoding") == ["chunked"]
    assert values(echoed, "Content-Length") == []


async def test_chunked_download_stays_chunked(proxy: Client) -> None:
    response = await proxy.get(f"/__stream?size={MiB + 3}&chunked=1")
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.headers
    assert hashlib.sha256(await response.read()).hexdigest() == pattern_sha256(MiB + 3)


async def test_encoded_bodies_pass_through_untouched(proxy: Client) -> None:
    response = await proxy.get("/__gzip", auto_decompress=False)
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Length"] == str(len(GZIP_BODY))
    assert await response.read() == GZIP_BODY
    echoed = await seen(await proxy.post("/upload", data=GZIP_BODY, headers={"Content-Encoding": "gzip"}))
    # The compressed bytes arrived as sent: the echo's own server could decode exactly them.
    assert values(echoed, "Content-Encoding") == ["gzip"]
    assert values(echoed, "Content-Length") == [str(len(GZIP_BODY))]
    assert (echoed["body_size"], echoed["body_sha256"]) == (len(GZIP_PLAIN), hashlib.sha256(GZIP_PLAIN).hexdigest())


async def test_head(proxy: Client) -> None:
    response = await proxy.head("/__stream?size=12345")
    assert response.status == 200
    assert response.headers["Content-Length"] == "12345"
    assert await response.read() == b""
    echoed = await seen(await proxy.get("/after-head"))  # the connection is still in a sane state
    assert echoed["method"] == "GET"


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses(proxy: Client, status: int) -> None:
    response = await proxy.get(f"/__status?code={status}")
    assert response.status == status
    assert response.headers["ETag"] == '"v1"'
    assert await response.read() == b""
    assert (await seen(await proxy.get("/after"))) is not None


async def test_multiple_set_cookie_headers_come_back(proxy: Client) -> None:
    response = await proxy.get("/__cookies")
    assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/; HttpOnly"]
    assert await response.text() == "cookies"


# --- websockets ---------------------------------------------------------------------------------------


async def test_websocket_round_trip(proxy: Client) -> None:
    async with proxy.ws_connect("/chat/__ws", protocols=("nope", "echo.v2"),
                                headers={"X-Auth-Request-User": "mallory", "Cookie": "_gw=s; t=1"}) as ws:
        assert ws.protocol == "echo.v2"
        await ws.send_str("headers")
        handshake = await ws.receive_json()
        assert values(handshake, "X-Auth-Request-User") == ["alice"]
        assert values(handshake, "Authorization") == ["Bearer at-123"]
        assert values(handshake, "Cookie") == ["t=1"]
        assert values(handshake, "X-Forwarded-For") == ["127.0.0.1"]
        assert handshake["protocol"] == "echo.v2"
        await ws.send_str("hello")
        assert await ws.receive_str() == "hello"
        await ws.send_bytes(b"\x00\x01binary\xff")
        assert await ws.receive_bytes() == b"\x00\x01binary\xff"
        await ws.send_str("close:4001")
        msg = await ws.receive()
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "bye")


async def test_websocket_close_code_from_client_reaches_upstream(proxy: Client, echo: TestServer) -> None:
    ws = await proxy.ws_connect("/__ws")
    await ws.send_str("ping")
    assert await ws.receive_str() == "ping"
    await ws.close(code=4002)
    assert ws.close_code == 4002
    assert await asyncio.wait_for(echo.app[WS_CLOSES].get(), timeout=5) == 4002


async def test_websocket_refused_where_disabled(proxy: Client, echo: TestServer) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await proxy.ws_connect("/nows/__ws")
    assert refused.value.status == 400
    assert echo.app[WS_CLOSES].empty()


async def test_invalid_websocket_handshake_is_refused(proxy: Client) -> None:
    response = await proxy.get("/__ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"})  # no key
    assert response.status == 400


async def test_upstream_refusing_the_upgrade_is_passed_on(proxy: Client) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await proxy.ws_connect("/__status?code=403")
    assert refused.value.status == 403


# --- failures ------------------------------------------------------------------------------------------


@pytest.fixture
def refused_url() -> Iterator[str]:
    """A loopback port that is bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_upstream_down_is_502_without_internals(aiohttp_client: ClientFactory, refused_url: str,
                                                     lean: bool) -> None:
    proxy = await aiohttp_client(proxy_app([{"path": "/", "url": refused_url}], lean=lean))
    response = await proxy.get("/x")
    assert response.status == 502
    text = await response.text()
    assert json.loads(text) == {"error": "bad_gateway", "detail": UpstreamError.default_detail}
    for leak in ("Traceback", "Errno", "refused", "127.0.0.1", "ClientConnector"):
        assert leak not in text
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await proxy.ws_connect("/__ws")
    assert refused.value.status == 502


async def test_slow_upstream_is_504(proxy: Client) -> None:
    response = await proxy.get("/slow/__slow?delay=30")
    assert response.status == 504
    assert await response.json() == {"error": "gateway_timeout", "detail": UpstreamTimeout.default_detail}


@pytest.mark.parametrize("query", ["", "?chunked=1"], ids=["content-length", "chunked"])
async def test_upstream_abort_mid_body_fails_the_transfer(proxy: Client, query: str) -> None:
    response = await proxy.get(f"/__abort{query}")
    assert response.status == 200  # the status was already out when the upstream failed
    with pytest.raises(aiohttp.ClientPayloadError):
        async with asyncio.timeout(10):  # a proxy that neither finishes nor cuts off would hang here
            await response.read()
    echoed = await seen(await proxy.get("/next"))  # and the proxy keeps serving
    assert echoed["path"] == "/next"


@pytest.mark.parametrize("cancel_handlers", [True, False], ids=["handler-cancellation", "no-cancellation"])
async def test_client_disconnect_releases_the_upstream_connection(echo: TestServer, cancel_handlers: bool,
                                                                  lean: bool) -> None:
    # One upstream connection in the pool: if the aborted download kept it, the next request would hang
    # (aiohttp's client), or go around the lean client, which the last assertion catches.
    runner = web.AppRunner(proxy_app([{"path": "/", "url": base(echo)}], lean=lean, pool_limit=1),
                           handler_cancellation=cancel_handlers, auto_decompress=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as client, asyncio.timeout(20):  # a leak would hang
            for _ in range(2):
                response = await client.get(f"http://127.0.0.1:{port}/__stream?size={1024 * MiB}")
                assert len(await response.content.readexactly(MiB)) == MiB
                response.close()  # drop the connection mid-download
            assert (await seen(await client.get(f"http://127.0.0.1:{port}/next")))["path"] == "/next"
        assert runner.app[LEAN].in_use() == 0
    finally:
        await runner.cleanup()
