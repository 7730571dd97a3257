"""Refresh against the real OP: renewed before expiry, one grant per session under concurrency."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

from tests.support.op import browser_login
from tests.support.records import open_record, seal_record

API = {"Accept": "application/json"}


async def login(gw: Any) -> tuple[Any, str]:
    browser = gw.browser()
    result = await browser_login(browser, f"{gw.url}/")
    assert result.status == 200, result.body
    return browser, bearer_seen(result.body)


def bearer_seen(body: str) -> str:
    headers = {k.lower(): v for k, v in json.loads(body)["headers"]}
    return headers["authorization"]


def session_record(gw: Any, browser: Any, redis_client: Any) -> dict[str, Any]:
    cookie = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
    sid = cookie.rpartition(".")[0]
    key = f"{gw.settings.session.key_prefix}s:{hashlib.sha256(sid.encode()).hexdigest()}"
    return {"key": key, **open_record(gw.settings, key, redis_client.get(key))}


def expire_access_token(gw: Any, clock: Any, record: dict[str, Any]) -> None:
    """Move the gateway's clock to just inside refresh_before_expiry of the access token's expiry."""
    clock.advance(record["expires_at"] - gw.settings.session.refresh_before_expiry - clock() + 1)


SESSION = {"session": {"idle_timeout": "8h"}}


async def test_upstream_sees_new_token_after_expiry_and_rotation_is_stored(
        gateway_factory: Any, op: Any, clock: Any, redis_client: Any) -> None:
    gw = await gateway_factory("gateway-public", **SESSION)  # the OP rotates this client's refresh tokens
    browser, first = await login(gw)
    async with browser:
        before = session_record(gw, browser, redis_client)
        op.reset_stats()
        resp = await browser.get(f"{gw.url}/still-fresh")
        assert bearer_seen(await resp.text()) == first and op.stats()["success"].get("refresh_token", 0) == 0
        expire_access_token(gw, clock, before)
        resp = await browser.get(f"{gw.url}/after-expiry")
        assert resp.status == 200
        second = bearer_seen(await resp.text())
        assert second != first and op.stats()["success"]["refresh_token"] == 1
        after = session_record(gw, browser, redis_client)
        assert after["refresh_token"] != before["refresh_token"]  # the rotated token is stored at once
        assert after["expires_at"] > before["expires_at"]
        resp = await browser.get(f"{gw.url}/again")
        assert bearer_seen(await resp.text()) == second and op.stats()["success"]["refresh_token"] == 1


async def test_fifty_concurrent_requests_cause_one_refresh_grant(
        gateway_factory: Any, op: Any, clock: Any, redis_client: Any) -> None:
    gw = await gateway_factory("gateway-public", **SESSION)
    browser, first = await login(gw)
    async with browser:

        async def one(i: int) -> tuple[int, str]:
            async with browser.get(f"{gw.url}/c{i}", headers=API) as resp:
                return resp.status, bearer_seen(await resp.text())

        # Open 50 keep-alive connections first, so the burst at expiry really arrives at once
        # (otherwise connection set-up staggers it longer than one refresh takes).
        assert {token for _, token in await asyncio.gather(*(one(i) for i in range(50)))} == {first}
        expire_access_token(gw, clock, session_record(gw, browser, redis_client))
        op.reset_stats()
        results = await asyncio.gather(*(one(i) for i in range(50)))
        assert {status for status, _ in results} == {200}
        tokens = {token for _, token in results}
        assert len(tokens) == 1 and first not in tokens
        assert op.stats()["success"]["refresh_token"] == 1
        assert op.stats()["error"].get("refresh_token", 0) == 0


async def test_two_gateways_share_a_session_and_refresh_once(
        gateway_factory: Any, op: Any, clock: Any, redis_client: Any) -> None:
    gw1 = await gateway_factory("gateway-public", **SESSION)
    gw2 = await gateway_factory("gateway-public", **{**SESSION, "session": {
        "idle_timeout": "8h", "key_prefix": gw1.settings.session.key_prefix}})
    browser, _ = await login(gw1)
    async with browser:
        cookie = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
        headers = {**API, "Cookie": f"_oidc_gateway={cookie}"}
        resp = await gw2.client.get("/other-replica", headers=headers)
        assert resp.status == 200  # a session made on one replica works on another
        expire_access_token(gw1, clock, session_record(gw1, browser, redis_client))
        op.reset_stats()
        replies = await asyncio.gather(*[gw.client.get(f"/r{i}", headers=headers)
                                         for i in range(10) for gw in (gw1, gw2)])
        assert {r.status for r in replies} == {200}
        assert len({bearer_seen(await r.text()) for r in replies}) == 1
        assert op.stats()["success"]["refresh_token"] == 1
        signed_out = await gw1.client.get("/oauth2/sign_out", headers=headers, allow_redirects=False)
        assert signed_out.status == 302
        assert (await gw2.client.get("/after-logout", headers=headers)).status == 401


async def test_invalid_grant_ends_the_session(gateway_factory: Any, op: Any, clock: Any,
                                              redis_client: Any) -> None:
    gw = await gateway_factory(**SESSION)
    browser, _ = await login(gw)
    async with browser:
        record = session_record(gw, browser, redis_client)
        key = record.pop("key")
        revoked = seal_record(gw.settings, key, {**record, "refresh_token": "revoked-or-unknown"})
        redis_client.set(key, revoked, px=60_000)
        expire_access_token(gw, clock, record)
        api = await browser.get(f"{gw.url}/api", headers=API)
        assert api.status == 401
        assert redis_client.get(key) is None
        page = await browser.get(f"{gw.url}/page", headers={"Accept": "text/html"}, allow_redirects=False)
        assert page.status == 302 and page.headers["Location"].startswith(op.issuer)  # back to login


async def test_without_refresh_token_session_ends_with_access_token(gateway_factory: Any, clock: Any,
                                                                    redis_client: Any) -> None:
    gw = await gateway_factory(oidc={"scopes": ["openid", "email"]}, **SESSION)  # no offline_access
    browser, _ = await login(gw)
    async with browser:
        record = session_record(gw, browser, redis_client)
        assert record["refresh_token"] is None
        expire_access_token(gw, clock, record)
        assert (await browser.get(f"{gw.url}/before-expiry", headers=API)).status == 200
        clock.advance(gw.settings.session.refresh_before_expiry)
        assert (await browser.get(f"{gw.url}/expired", headers=API)).status == 401


async def test_sign_out_revokes_the_refresh_token_at_the_op(gateway_factory: Any, op: Any,
                                                            redis_client: Any) -> None:
    import base64

    import aiohttp

    gw = await gateway_factory(**SESSION)
    browser, _ = await login(gw)
    async with browser:
        refresh_token = session_record(gw, browser, redis_client)["refresh_token"]
        assert refresh_token
        resp = await browser.get(f"{gw.url}/oauth2/sign_out", allow_redirects=False)
        assert resp.status == 302
    async with aiohttp.ClientSession() as http:
        grant = await http.post(f"{op.issuer}/token", data={"grant_type": "refresh_token",
                                                             "refresh_token": refresh_token},
                                headers={"Authorization": "Basic " + base64.b64encode(
                                    f"gateway:{op.clients['gateway']}".encode()).decode()})
        assert grant.status == 400 and (await grant.json())["error"] == "invalid_grant"
