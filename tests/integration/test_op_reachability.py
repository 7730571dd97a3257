"""ProviderState's reachability verdict: a login start probes the OP at most once per PROBE_INTERVAL, and
not at all while the OP's endpoints keep answering the gateway's own calls (token, userinfo)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.config import Settings
from gateway.errors import ProviderError
from gateway.oidc.client import OIDCClient
from gateway.oidc.metadata import PROBE_INTERVAL, ProviderState

DISCOVERY = "/.well-known/openid-configuration"


class ToyOP:
    """Discovery, a token endpoint that answers `token_status`, a userinfo endpoint; counts requests."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.token_status = 400
        self.issuer = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(DISCOVERY, self._discovery)
        app.router.add_post("/token", self._token)
        app.router.add_get("/me", self._userinfo)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        self.hits[DISCOVERY] += 1
        return web.json_response({"issuer": self.issuer, "authorization_endpoint": f"{self.issuer}/auth",
                                  "token_endpoint": f"{self.issuer}/token",
                                  "userinfo_endpoint": f"{self.issuer}/me", "jwks_uri": f"{self.issuer}/jwks"})

    async def _token(self, request: web.Request) -> web.Response:
        self.hits["/token"] += 1
        return web.json_response({"error": "invalid_grant"}, status=self.token_status)

    async def _userinfo(self, request: web.Request) -> web.Response:
        self.hits["/me"] += 1
        return web.json_response({"sub": "alice"})


@pytest.fixture
async def toy_op(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> ToyOP:
    op = ToyOP()
    server = await aiohttp_server(op.app())
    op.issuer = str(server.make_url("")).rstrip("/")
    return op


async def _client(toy_op: ToyOP, settings_factory: Callable[..., Settings], http: aiohttp.ClientSession,
                  now: list[float]) -> tuple[ProviderState, OIDCClient]:
    settings = settings_factory(oidc={"issuer": toy_op.issuer})
    provider = ProviderState(http, settings.oidc, clock=lambda: now[0])
    assert await provider.load_once()
    verifier: Any = None  # no ID token is verified here
    return provider, OIDCClient(settings.oidc, provider, verifier, http, redirect_uri=settings.redirect_uri,
                                clock=lambda: now[0])


async def test_an_op_answer_renews_the_verdict_like_a_probe(toy_op: ToyOP,
                                                            settings_factory: Callable[..., Settings]) -> None:
    now = [0.0]
    async with aiohttp.ClientSession() as http:
        provider, client = await _client(toy_op, settings_factory, http, now)
        assert toy_op.hits[DISCOVERY] == 1
        now[0] = 5 * PROBE_INTERVAL
        await provider.ensure_reachable()  # stale: one probe
        assert toy_op.hits[DISCOVERY] == 2
        now[0] = 10 * PROBE_INTERVAL
        with pytest.raises(ProviderError):  # an error answer is an answer: the OP is up
            await client.refresh("rt")
        now[0] += PROBE_INTERVAL / 2
        await provider.ensure_reachable()
        assert toy_op.hits[DISCOVERY] == 2  # no probe: the token endpoint answered moments ago
        assert await client.userinfo("at", expected_sub="alice") == {"sub": "alice"}
        now[0] += PROBE_INTERVAL / 2
        await provider.ensure_reachable()
        assert toy_op.hits[DISCOVERY] == 2
        now[0] += PROBE_INTERVAL
        await provider.ensure_reachable()  # nothing answered for a whole interval: a probe again
        assert toy_op.hits[DISCOVERY] == 3


async def test_a_server_error_is_no_evidence(toy_op: ToyOP, settings_factory: Callable[..., Settings]) -> None:
    now = [0.0]
    async with aiohttp.ClientSession() as http:
        provider, client = await _client(toy_op, settings_factory, http, now)
        toy_op.token_status = 503
        now[0] = 10 * PROBE_INTERVAL
        with pytest.raises(ProviderError):
            await client.refresh("rt")
        await provider.ensure_reachable()
        assert toy_op.hits == {DISCOVERY: 2, "/token": 1}  # the 503 did not count: probed
