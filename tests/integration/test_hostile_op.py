"""The gateway against an OP that misbehaves: every bad answer ends in a clean 400/503, never a session."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization

from tests.fakes.fake_op import CLIENT_SECRET, FakeOP
from tests.support.op import browser_login

GatewayMaker = Callable[..., Awaitable[tuple[TestClient, str]]]


@pytest.fixture
def make_gateway(fake_op_gateway: Any) -> GatewayMaker:
    async def make(**oidc: Any) -> tuple[TestClient, str]:
        gw = await fake_op_gateway(oidc={"scopes": ["openid", "email"], "discovery_retry_interval": "50ms",
                                         "jwks_min_refresh_interval": "60s", **oidc})
        return gw.client, gw.url

    return make


async def login(url: str) -> tuple[int, str, list[str]]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        result = await browser_login(browser, f"{url}/x")
        cookies = [c.key for c in browser.cookie_jar]
    return result.status, result.body, cookies


async def test_well_behaved_fake_op_logs_in(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway()
    status, body, cookies = await login(url)
    assert status == 200 and '"/x"' in body
    assert "_oidc_gateway" in cookies
    # client_secret_basic was used, and the PKCE verifier was sent.
    assert fake_op.token_requests[-1]["authorization"].startswith("Basic ")
    assert len(fake_op.token_requests[-1]["code_verifier"]) >= 43


def _mutate(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def apply(claims: dict[str, Any]) -> None:
        for key, value in changes.items():
            if value is None:
                claims.pop(key, None)
            else:
                claims[key] = value(claims) if callable(value) else value

    return apply


@pytest.mark.parametrize("mutation", [
    _mutate(nonce="not-the-nonce"),
    _mutate(nonce=None),
    _mutate(iss="http://evil.example"),
    _mutate(aud="someone-else"),
    _mutate(aud=["gateway", "other"]),
    _mutate(exp=lambda c: c["iat"] - 3600),
    _mutate(iat=lambda c: c["iat"] + 3600),
    _mutate(iat=None),
    _mutate(sub=None),
    _mutate(at_hash="AAAAAAAAAAAAAAAAAAAAAA"),
], ids=["nonce", "no-nonce", "iss", "aud", "multi-aud-no-azp", "expired", "iat-future", "no-iat", "no-sub",
        "at_hash"])
async def test_bad_id_token_claims_rejected(make_gateway: GatewayMaker, fake_op: FakeOP,
                                            mutation: Callable[[dict[str, Any]], None],
                                            caplog: pytest.LogCaptureFixture) -> None:
    _, url = await make_gateway()
    fake_op.claims_mutator = mutation
    status, body, cookies = await login(url)
    # The page says login_failed in the reader's language; the log names the cause.
    assert status == 400 and "login_failed" in body and "ID token invalid" in caplog.text
    assert "_oidc_gateway" not in cookies


async def test_alg_none_rejected(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway()
    fake_op.sign_alg = "none"
    status, _, cookies = await login(url)
    assert status == 400 and "_oidc_gateway" not in cookies


async def test_hs256_when_only_rs256_allowed_rejected(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway()
    fake_op.sign_alg, fake_op.sign_key = "HS256", CLIENT_SECRET.encode()
    status, _, cookies = await login(url)
    assert status == 400 and "_oidc_gateway" not in cookies


async def test_hs256_signed_with_rsa_public_key_rejected(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway(id_token_signing_algs=["RS256", "HS256"])
    fake_op.sign_alg = "HS256"
    fake_op.sign_key = fake_op.keys["k1"].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    status, _, cookies = await login(url)
    assert status == 400 and "_oidc_gateway" not in cookies


async def test_hs256_with_the_client_secret_accepted_when_allowed(make_gateway: GatewayMaker,
                                                                  fake_op: FakeOP) -> None:
    _, url = await make_gateway(id_token_signing_algs=["HS256"])
    fake_op.sign_alg, fake_op.sign_key = "HS256", CLIENT_SECRET.encode()
    assert (await login(url))[0] == 200


async def test_userinfo_sub_mismatch_rejected(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway()
    fake_op.userinfo_sub = "mallory"
    status, _, cookies = await login(url)
    assert status == 400 and "_oidc_gateway" not in cookies


@pytest.mark.parametrize("setup", [
    {"token_error": {"error": "invalid_grant"}, "token_status": 400},
    {"token_error": {"error": "invalid_client"}, "token_status": 401},
    {"token_status": 500},
    {"token_extra": {"id_token": None}},
    {"token_extra": {"token_type": "mac"}},
    {"token_extra": {"access_token": 42}},
], ids=["invalid_grant", "invalid_client", "500-html", "no-id_token", "token_type", "bad-access_token"])
async def test_token_endpoint_failures_are_clean_400(make_gateway: GatewayMaker, fake_op: FakeOP,
                                                     setup: dict[str, Any]) -> None:
    _, url = await make_gateway()
    for key, value in setup.items():
        setattr(fake_op, key, value)
    status, body, cookies = await login(url)
    assert status == 400 and "Traceback" not in body and "_oidc_gateway" not in cookies


async def test_issuer_mismatch_keeps_gateway_unready_then_recovers(make_gateway: GatewayMaker,
                                                                   fake_op: FakeOP) -> None:
    fake_op.advertised_issuer = "http://127.0.0.1:1/other"
    client, url = await make_gateway()
    ready = await client.get("/readyz")
    assert ready.status == 503 and "issuer mismatch" in (await ready.json())["problems"]["provider"]
    page = await client.get("/x", headers={"Accept": "text/html"}, allow_redirects=False)
    assert page.status == 503 and "provider_unavailable" in await page.text()
    api = await client.get("/x", headers={"Accept": "application/json"})
    assert api.status == 401  # API clients are told to authenticate, not sent to a login
    fake_op.advertised_issuer = None  # the OP is fixed; the gateway's retry loop picks it up
    deadline = time.monotonic() + 5
    while (await client.get("/readyz")).status != 200:
        assert time.monotonic() < deadline, "the gateway never recovered"
        await asyncio.sleep(0.02)
    assert (await login(url))[0] == 200


async def test_unknown_kid_refetches_jwks_once_rate_limited(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway(jwks_min_refresh_interval="0s")
    assert (await login(url))[0] == 200
    before = fake_op.jwks_fetches
    fake_op.rotate_key("k2")  # the OP publishes a new key and signs with it
    assert (await login(url))[0] == 200
    assert fake_op.jwks_fetches == before + 1


async def test_forged_kids_cannot_hammer_the_jwks_endpoint(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway()  # jwks_min_refresh_interval 60s
    before = fake_op.jwks_fetches
    fake_op.header_kid = "forged"
    for _ in range(3):
        assert (await login(url))[0] == 400
    assert fake_op.jwks_fetches - before <= 1


async def test_jwks_outage_keeps_last_good_keys(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway(jwks_min_refresh_interval="0s")
    fake_op.jwks_status = 500
    assert (await login(url))[0] == 200  # known kid: cached key still used
    fake_op.rotate_key("k3")
    assert (await login(url))[0] == 400  # new kid during the outage: cannot verify, rejected


@pytest.mark.parametrize("mutation", [
    _mutate(c_hash="AAAAAAAAAAAAAAAAAAAAAA"), _mutate(c_hash=None), _mutate(nonce="other"), _mutate(sub="mallory"),
], ids=["wrong-c_hash", "no-c_hash", "nonce", "sub-differs-from-token-endpoint"])
async def test_hybrid_front_channel_id_token_checked(make_gateway: GatewayMaker, fake_op: FakeOP,
                                                     mutation: Callable[[dict[str, Any]], None],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    _, url = await make_gateway(response_type="code id_token", response_mode="form_post")
    assert (await login(url))[0] == 200  # the well-formed hybrid response logs in
    fake_op.front_claims_mutator = mutation
    caplog.clear()
    status, body, cookies = await login(url)
    assert status == 400 and "login_failed" in body and "_oidc_gateway" not in cookies
    assert "ID token invalid" in caplog.text


async def test_hybrid_response_without_id_token_rejected(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    _, url = await make_gateway(response_type="code id_token", response_mode="form_post")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        stop = await browser_login(browser, f"{url}/x", stop_at=lambda u: u.path == "/oauth2/callback")
        assert stop.status == 200 and 'name="id_token"' in stop.body
        state = stop.body.split('name="state" value="')[1].split('"')[0]
        code = stop.body.split('name="code" value="')[1].split('"')[0]
        resp = await browser.post(f"{url}/oauth2/callback", data={"state": state, "code": code},
                                  headers={"Accept": "application/json"}, allow_redirects=False)
        assert resp.status == 400 and "no ID token" in (await resp.json())["error_description"]


async def test_op_failing_at_refresh_keeps_the_session_until_the_token_expires(
        make_gateway: GatewayMaker, fake_op: FakeOP, fake_op_server: Any, clock: Any) -> None:
    client, url = await make_gateway(scopes=["openid", "email", "offline_access"])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert (await browser_login(browser, f"{url}/x")).status == 200
        api = {"Accept": "application/json"}
        clock.advance(300 - 30 + 1)  # inside refresh_before_expiry of the 300 s access token
        fake_op.token_status = 500
        kept = await browser.get(f"{url}/during-op-error", headers=api)
        assert kept.status == 200  # the current token is still valid: the session goes on
        await fake_op_server.close()  # the OP goes away entirely
        assert (await browser.get(f"{url}/during-op-outage", headers=api)).status == 200
        clock.advance(30)  # now the access token has really expired and cannot be renewed
        gone = await browser.get(f"{url}/after-expiry", headers=api)
        assert gone.status == 503 and (await gone.json())["error"] == "provider_unavailable"


async def test_refresh_with_the_fake_op_renews_the_token(make_gateway: GatewayMaker, fake_op: FakeOP,
                                                         clock: Any) -> None:
    _, url = await make_gateway(scopes=["openid", "email", "offline_access"])
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        assert (await browser_login(browser, f"{url}/x")).status == 200
        clock.advance(300 - 30 + 1)
        assert (await browser.get(f"{url}/y", headers={"Accept": "application/json"})).status == 200
        assert [r["grant_type"] for r in fake_op.token_requests] == ["authorization_code", "refresh_token"]
