"""The callback's userinfo request: sent before the ID token is verified (the OP answers it meanwhile),
its claims used only once the ID token verified and names the same sub (OIDC Core §5.3.4)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Handler

from tests.conftest import Gateway, deep_merge, free_port
from tests.fakes.fake_op import CLIENT_SECRET, FakeOP
from tests.support.op import browser_login

WAIT = 2.0  # seconds the OP's JWKS endpoint waits for the userinfo request before answering anyway


class WatchedOP:
    """The fake OP, with its userinfo answer settable and its request paths recorded in order."""

    def __init__(self, fake: FakeOP) -> None:
        self.fake = fake
        self.paths: list[str] = []
        self.userinfo_status = 200
        self.jwks_waits_for_userinfo = False
        self.jwks_waited_in_vain = False
        self._userinfo_seen = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.paths.append(request.path)
        if request.path == "/userinfo":
            self._userinfo_seen.set()
            if self.userinfo_status != 200:
                return web.Response(status=self.userinfo_status)
        if request.path == "/jwks" and self.jwks_waits_for_userinfo:
            try:
                await asyncio.wait_for(self._userinfo_seen.wait(), WAIT)
            except TimeoutError:
                self.jwks_waited_in_vain = True
        return await handler(request)


@pytest.fixture
async def watched_op(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> WatchedOP:
    port = free_port()
    watched = WatchedOP(FakeOP(base_url=f"http://127.0.0.1:{port}"))
    app = watched.fake.app()
    app.middlewares.append(watched.middleware)
    await aiohttp_server(app, port=port)
    return watched


@pytest.fixture
def make_gateway(start_gateway: Callable[..., Awaitable[Gateway]],
                 watched_op: WatchedOP) -> Callable[..., Awaitable[Gateway]]:
    async def make(**oidc: Any) -> Gateway:
        base = {"issuer": watched_op.fake.issuer, "client_secret": CLIENT_SECRET, "scopes": ["openid", "email"],
                "jwks_min_refresh_interval": "0s"}
        return await start_gateway(oidc=deep_merge(base, oidc))

    return make


async def login(gw: Gateway) -> tuple[int, list[str]]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        result = await browser_login(browser, f"{gw.url}/x")
        return result.status, [c.key for c in browser.cookie_jar]


async def test_userinfo_is_requested_while_the_id_token_is_verified(make_gateway: Any,
                                                                    watched_op: WatchedOP) -> None:
    gw = await make_gateway()
    # A new signing key: verifying the login's ID token needs a JWKS fetch, which the OP answers only
    # once the userinfo request has come in (or after WAIT seconds).
    watched_op.fake.rotate_key("k2")
    watched_op.jwks_waits_for_userinfo = True
    status, cookies = await login(gw)
    assert status == 200 and "_oidc_gateway" in cookies
    assert not watched_op.jwks_waited_in_vain, watched_op.paths
    assert watched_op.paths[-3:] == ["/token", "/userinfo", "/jwks"]


async def test_an_id_token_that_fails_wins_over_userinfo(make_gateway: Any, watched_op: WatchedOP) -> None:
    gw = await make_gateway()
    watched_op.fake.claims_mutator = lambda claims: claims.update(nonce="not-the-nonce")
    status, cookies = await login(gw)
    assert status == 400 and "_oidc_gateway" not in cookies


@pytest.mark.parametrize("userinfo_sub", ["mallory", None])
async def test_userinfo_of_another_subject_fails_the_login(make_gateway: Any, watched_op: WatchedOP,
                                                           userinfo_sub: str | None) -> None:
    gw = await make_gateway()
    watched_op.fake.userinfo_sub = userinfo_sub
    status, cookies = await login(gw)
    assert (status, "_oidc_gateway" in cookies) == ((400, False) if userinfo_sub else (200, True))


async def test_userinfo_failure_after_a_good_id_token_is_a_provider_error(make_gateway: Any,
                                                                         watched_op: WatchedOP) -> None:
    gw = await make_gateway()
    watched_op.userinfo_status = 500
    status, cookies = await login(gw)
    assert status == 502 and "_oidc_gateway" not in cookies  # the OP's fault, not a rejected login (400)


async def test_without_use_userinfo_nothing_is_requested(make_gateway: Any, watched_op: WatchedOP) -> None:
    gw = await make_gateway(use_userinfo=False)
    status, _ = await login(gw)
    assert status == 200 and "/userinfo" not in watched_op.paths
