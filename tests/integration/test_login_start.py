"""The login start (LoginFlow.begin) when the OP's reachability verdict is stale: the probe and the
pending-login write run at once, and the OP's verdict still decides first."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer, make_mocked_request

from gateway.auth.cookie_session import SessionAuthenticator
from gateway.auth.flow import LoginFlow
from gateway.config import Settings
from gateway.errors import ProviderUnavailable, StoreUnavailable
from gateway.oidc.client import OIDCClient
from gateway.oidc.metadata import PROBE_INTERVAL, ProviderState
from gateway.session.cookie import SignedCookie
from gateway.session.model import PendingLogin
from gateway.session.store import MemoryStore

DISCOVERY = "/.well-known/openid-configuration"
PATIENCE = 5.0  # seconds a probe waits for the store write before it gives up (only when they run one by one)


class ProbedOP:
    """Discovery only. After the first (start-up) fetch, a discovery request answers only once `written` is
    set, or with 500 after PATIENCE: a probe that runs before the store write gets 500."""

    def __init__(self) -> None:
        self.issuer = ""
        self.fetches = 0
        self.status = 200
        self.written = asyncio.Event()

    async def discovery(self, request: web.Request) -> web.Response:
        self.fetches += 1
        if self.fetches > 1:
            try:
                async with asyncio.timeout(PATIENCE):
                    await self.written.wait()
            except TimeoutError:
                return web.json_response({}, status=500)
        return web.json_response({"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
                                  "token_endpoint": f"{self.issuer}/token", "jwks_uri": f"{self.issuer}/jwks"},
                                 status=self.status)


class SignallingStore(MemoryStore):
    """A MemoryStore that tells the OP when a pending login is written, or fails that write."""

    def __init__(self, op: ProbedOP, clock: Callable[[], float], *, fail: bool = False) -> None:
        super().__init__(clock)
        self._op = op
        self._fail = fail
        self.logins = 0

    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None:
        if self._fail:
            raise StoreUnavailable()
        await super().put_login(state, pending, ttl=ttl)
        self.logins += 1
        self._op.written.set()


@pytest.fixture
async def probed_op(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> ProbedOP:
    op = ProbedOP()
    app = web.Application()
    app.router.add_get(DISCOVERY, op.discovery)
    server = await aiohttp_server(app)
    op.issuer = str(server.make_url("")).rstrip("/")
    return op


async def _flow(op: ProbedOP, settings_factory: Callable[..., Settings], http: aiohttp.ClientSession,
                now: list[float], *, fail_store: bool = False) -> tuple[LoginFlow, SignallingStore]:
    settings = settings_factory(oidc={"issuer": op.issuer}, session={"store": "memory"})
    provider = ProviderState(http, settings.oidc, clock=lambda: now[0])
    assert await provider.load_once()
    verifier: Any = None  # no ID token is verified at the start
    client = OIDCClient(settings.oidc, provider, verifier, http, redirect_uri=settings.redirect_uri,
                        clock=lambda: now[0])
    store = SignallingStore(op, lambda: now[0], fail=fail_store)
    session_cookie = SignedCookie("s", b"k" * 32, secure=False, max_age=3600)
    login_cookie = SignedCookie("s_login", b"l" * 32, secure=False, max_age=600)
    sessions = SessionAuthenticator(store, session_cookie, settings.session, clock=lambda: now[0])
    return LoginFlow(settings, client, store, sessions, session_cookie, login_cookie, clock=lambda: now[0]), store


async def test_a_stale_verdict_probes_while_the_pending_login_is_written(
        probed_op: ProbedOP, settings_factory: Callable[..., Settings]) -> None:
    now = [0.0]
    async with aiohttp.ClientSession() as http:
        flow, store = await _flow(probed_op, settings_factory, http, now)
        now[0] = 5 * PROBE_INTERVAL  # stale: this start probes
        async with asyncio.timeout(PATIENCE / 2):  # one by one, the probe would wait for the write: 500
            response = await flow.begin(make_mocked_request("GET", "/app"), "/app")
        assert response.status == 302 and response.headers["Location"].startswith(f"{probed_op.issuer}/auth?")
        assert (probed_op.fetches, store.logins) == (2, 1)


async def test_a_current_verdict_asks_the_op_nothing(probed_op: ProbedOP,
                                                     settings_factory: Callable[..., Settings]) -> None:
    now = [0.0]
    async with aiohttp.ClientSession() as http:
        flow, store = await _flow(probed_op, settings_factory, http, now)
        response = await flow.begin(make_mocked_request("GET", "/app"), "/app")
        assert response.status == 302 and (probed_op.fetches, store.logins) == (1, 1)


async def test_the_ops_verdict_comes_before_the_stores_error(probed_op: ProbedOP,
                                                             settings_factory: Callable[..., Settings]) -> None:
    now = [0.0]
    async with aiohttp.ClientSession() as http:
        flow, _ = await _flow(probed_op, settings_factory, http, now, fail_store=True)
        now[0] = 5 * PROBE_INTERVAL
        probed_op.status = 503  # the OP is down
        probed_op.written.set()
        with pytest.raises(ProviderUnavailable):
            await flow.begin(make_mocked_request("GET", "/app"), "/app")
        probed_op.status = 200  # the OP is back, the store is not
        now[0] = 10 * PROBE_INTERVAL
        with pytest.raises(StoreUnavailable):
            await flow.begin(make_mocked_request("GET", "/app"), "/app")
