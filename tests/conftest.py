"""Shared fixtures: settings_factory, a clock, a real Redis (own key prefix), the real OP, gateways.

Redis: REDIS_URL (default redis://127.0.0.1:6379/0); each test gets a unique key prefix and deletes
only its own keys. The OP: tests/op/server.js (node oidc-provider), one per test session. A Redis
Cluster and a Sentinel (tests/support/redis_plugin.py) start on first use, once per test session.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import Settings, settings_from_mapping

pytest_plugins = ["tests.support.op_plugin", "tests.support.redis_plugin"]

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
COOKIE_SECRET = "test-cookie-secret-0123456789abcdef0123456789"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class FakeClock:
    """Real time plus an offset that tests move forward; tokens from the real OP stay valid."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    prefix = f"oidc-gateway-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture
def redis_client(redis_prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def settings_factory(redis_prefix: str) -> Callable[..., Settings]:
    """Settings with the interface.md minimal shape; keyword overrides are deep-merged sections."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "listen": "127.0.0.1:4180",
            "public_url": "http://127.0.0.1:4180",
            "oidc": {"issuer": "http://127.0.0.1:9", "client_id": "gateway",
                     "client_secret": "gateway-secret-0123456789abcdef",
                     "scopes": ["openid", "profile", "email", "offline_access"]},
            "session": {"store": "redis", "redis_url": REDIS_URL, "key_prefix": redis_prefix,
                        "cookie_secret": COOKIE_SECRET, "cookie_secure": False},
            "upstreams": [{"path": "/", "url": "http://127.0.0.1:9"}],
        }
        return settings_from_mapping(deep_merge(base, overrides), environ={})

    return make


class GatewayServer(TestServer):
    """A TestServer that serves an app the way run_gateway does: gateway.web.server's protocol with the
    options of gateway.app.server_options (the gateway's own settings when the app has them)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        from gateway.app import SERVER_OPTIONS, SETTINGS, server_options
        from gateway.web.server import GatewayRunner

        if SETTINGS in self.app:
            settings = self.app[SETTINGS]
            return GatewayRunner(self.app, header_timeout=settings.header_timeout,
                                 **{**kwargs, **server_options(settings)})
        return GatewayRunner(self.app, header_timeout=20.0, **{**kwargs, **SERVER_OPTIONS})


@pytest.fixture
async def echo_upstream() -> AsyncIterator[str]:
    """The echo upstream, reading bodies as sent (no decompression), so tests see the wire bytes."""
    from tests.fakes.echo import echo_app

    server = GatewayServer(echo_app(), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@dataclass
class Gateway:
    client: TestClient
    url: str
    settings: Settings

    def browser(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.fixture
async def start_gateway(settings_factory: Callable[..., Settings], echo_upstream: str,
                        clock: FakeClock) -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """Start a gateway on a known port (its public_url must match the redirect_uri) in front of echo;
    keyword overrides are deep-merged sections, as for settings_factory."""
    started: list[TestClient] = []

    async def start(**overrides: Any) -> Gateway:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        settings = settings_factory(**deep_merge({"listen": f"127.0.0.1:{port}", "public_url": url,
                                                  "upstreams": [{"path": "/", "url": echo_upstream}]}, overrides))
        from gateway.app import create_app

        app: web.Application = create_app(settings, clock=clock)
        client = TestClient(GatewayServer(app, host="127.0.0.1", port=port))
        await client.start_server()
        started.append(client)
        return Gateway(client=client, url=url, settings=settings)

    yield start
    for client in started:
        await client.close()


@pytest.fixture
def gateway_factory(start_gateway: Callable[..., Awaitable[Gateway]], op: Any) -> Callable[..., Awaitable[Gateway]]:
    """A gateway for one of the real OP's clients."""

    async def make(client_id: str = "gateway", **overrides: Any) -> Gateway:
        oidc = {"issuer": op.issuer, "client_id": client_id, "client_secret": op.clients.get(client_id)}
        if op.clients.get(client_id) is None:
            oidc["token_endpoint_auth_method"] = "none"
        return await start_gateway(**deep_merge({"oidc": oidc}, overrides))

    return make


@pytest.fixture
async def fake_op_server(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    """The misbehaving fake OP (tests/fakes/fake_op.py) on a known port; `.fake_op` is its state."""
    from tests.fakes.fake_op import FakeOP

    port = free_port()
    fake = FakeOP(base_url=f"http://127.0.0.1:{port}")
    server = await aiohttp_server(fake.app(), port=port)
    server.fake_op = fake  # type: ignore[attr-defined]
    return server


@pytest.fixture
def fake_op(fake_op_server: TestServer) -> Any:
    return fake_op_server.fake_op  # type: ignore[attr-defined]


@pytest.fixture
def fake_op_gateway(start_gateway: Callable[..., Awaitable[Gateway]],
                    fake_op: Any) -> Callable[..., Awaitable[Gateway]]:
    """A gateway whose OP is the fake OP."""
    from tests.fakes.fake_op import CLIENT_SECRET

    async def make(**overrides: Any) -> Gateway:
        return await start_gateway(**deep_merge({"oidc": {"issuer": fake_op.issuer, "client_secret": CLIENT_SECRET}},
                                                overrides))

    return make
