"""POST /oauth2/backchannel_logout over HTTP, with logout tokens signed in-test by keys the gateway trusts.

The fake OP logs users in (its ID tokens carry the `sid` a test chooses) and serves the JWKS; the
tests sign logout tokens with its key, so each BCL 1.0 §2.6 rule can be broken on purpose. The real
OP sending real logout tokens is in test_backchannel_op.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.oidc.verify import LOGOUT_EVENT
from tests.fakes.fake_op import CLIENT_ID, CLIENT_SECRET, FakeOP
from tests.support.op import browser_login

ENDPOINT = "/oauth2/backchannel_logout"
API = {"Accept": "application/json"}
GatewayMaker = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_gateway(fake_op_gateway: Any) -> GatewayMaker:
    async def make(*, store: str = "redis", algs: tuple[str, ...] = ("RS256",)) -> TestClient:
        gw = await fake_op_gateway(
            oidc={"scopes": ["openid", "email"], "use_userinfo": False,  # the fake OP's userinfo knows alice only
                  "id_token_signing_algs": list(algs)},
            session={"store": store})  # Redis: every gateway of a test shares the test's key prefix
        return gw.client

    return make


async def login(gw: TestClient, op: FakeOP, sub: str, op_sid: str | None) -> str:
    """Log `sub` in through the gateway, with `op_sid` as the ID token's sid; returns the session cookie."""

    def as_user(claims: dict[str, Any]) -> None:
        claims["sub"] = sub
        if op_sid is not None:
            claims["sid"] = op_sid

    op.claims_mutator = as_user
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        result = await browser_login(browser, gw.make_url("/x"))
        assert result.status == 200, result.body
        return next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")


async def status_with(gw: TestClient, cookie: str) -> int:
    resp = await gw.get("/api", headers={**API, "Cookie": f"_oidc_gateway={cookie}"})
    return resp.status


def logout_token(op: FakeOP, *, key: Any = None, alg: str = "RS256", header: dict[str, Any] | None = None,
                 **changes: Any) -> str:
    """A valid logout token for alice's OP session "op-a1", except for `changes` (None removes a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {"iss": op.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
                              "jti": secrets.token_urlsafe(12), "sub": "alice", "sid": "op-a1",
                              "events": {LOGOUT_EVENT: {}}}
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    headers = {"kid": "k1", "typ": "logout+jwt", **(header or {})}
    return jwt.encode(claims, op.keys["k1"] if key is None else key, algorithm=alg, headers=headers)


async def post_logout(gw: TestClient, token: str | None, **kwargs: Any) -> aiohttp.ClientResponse:
    data = kwargs.pop("data", None) if token is None else {"logout_token": token}
    return await gw.post(ENDPOINT, data=data, **kwargs)


@pytest.mark.parametrize("store", ["redis", "memory"])
@pytest.mark.parametrize(("sid", "sub", "ended"), [
    ("op-a1", "alice", {"a1"}),  # both: the sid decides (BCL §2.7), alice's other session stays
    ("op-a1", None, {"a1"}),
    (None, "alice", {"a1", "a2"}),  # sub only: every session of alice
], ids=["sid+sub", "sid-only", "sub-only"])
async def test_logout_ends_the_named_sessions_only(make_gateway: GatewayMaker, fake_op: FakeOP, store: str,
                                                   sid: str | None, sub: str | None, ended: set[str]) -> None:
    gw = await make_gateway(store=store)
    cookies = {"a1": await login(gw, fake_op, "alice", "op-a1"), "a2": await login(gw, fake_op, "alice", "op-a2"),
               "b1": await login(gw, fake_op, "bob", "op-b1")}
    assert {name: await status_with(gw, c) for name, c in cookies.items()} == {"a1": 200, "a2": 200, "b1": 200}

    resp = await post_logout(gw, logout_token(fake_op, sid=sid, sub=sub))  # no cookie, no Origin: server-to-server
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    assert {name: await status_with(gw, c) for name, c in cookies.items()} == {
        name: 401 if name in ended else 200 for name in cookies}


async def test_logout_of_a_session_without_sid_by_sub(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    """An OP that puts no sid in ID tokens can still end them all by sub."""
    gw = await make_gateway()
    cookie = await login(gw, fake_op, "alice", None)
    assert (await post_logout(gw, logout_token(fake_op, sid="op-a1"))).status == 200
    assert await status_with(gw, cookie) == 200  # that sid names no session of ours
    assert (await post_logout(gw, logout_token(fake_op, sid=None))).status == 200
    assert await status_with(gw, cookie) == 401


def _other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# name -> (how to build the bad request from the fake OP, the reason the gateway gives)
REJECTIONS: dict[str, tuple[Callable[[FakeOP], str], str]] = {
    "bad signature": (lambda op: logout_token(op, key=_other_key()), "bad signature"),
    "alg none": (lambda op: jwt.encode(jwt.decode(logout_token(op), options={"verify_signature": False}), None,
                                       algorithm="none"), "signing algorithm not allowed"),
    "alg not allowed": (lambda op: logout_token(op, key=CLIENT_SECRET.encode(), alg="HS256"),
                        "signing algorithm not allowed"),
    "typ not logout": (lambda op: logout_token(op, header={"typ": "at+jwt"}), "token type not allowed"),
    "wrong iss": (lambda op: logout_token(op, iss="http://127.0.0.1:1"), "issuer mismatch"),
    "wrong aud": (lambda op: logout_token(op, aud="another-client"), "audience mismatch"),
    "no events": (lambda op: logout_token(op, events=None), "logout event missing"),
    "other event": (lambda op: logout_token(op, events={"http://example.com/other": {}}), "logout event missing"),
    "event not object": (lambda op: logout_token(op, events={LOGOUT_EVENT: "yes"}), "logout event missing"),
    "nonce present": (lambda op: logout_token(op, nonce="n-1"), "nonce present"),
    "neither sid nor sub": (lambda op: logout_token(op, sid=None, sub=None), "sid and sub missing"),
    "no jti": (lambda op: logout_token(op, jti=None), "jti missing"),
    "iat in future": (lambda op: logout_token(op, iat=int(time.time()) + 3600, exp=int(time.time()) + 3700),
                      "issued-at missing or in the future"),
    "no iat": (lambda op: logout_token(op, iat=None), "issued-at missing or in the future"),
    "expired": (lambda op: logout_token(op, iat=int(time.time()) - 600, exp=int(time.time()) - 300),
                "token expired"),
    "not a JWT": (lambda op: "not-a-jwt", "malformed token"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
async def test_invalid_logout_token_is_400_json_and_ends_nothing(make_gateway: GatewayMaker, fake_op: FakeOP,
                                                                 case: str, caplog: Any) -> None:
    gw = await make_gateway()
    cookie = await login(gw, fake_op, "alice", "op-a1")
    build, reason = REJECTIONS[case]
    token = build(fake_op)
    with caplog.at_level(logging.INFO, logger="gateway"):
        # Accept: text/html too: this endpoint answers machines, in JSON (BCL §2.8).
        resp = await post_logout(gw, token, headers={"Accept": "text/html"})
    assert resp.status == 400 and resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"] == "invalid_request" and reason in body["error_description"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert await status_with(gw, cookie) == 200
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("gateway")]
    assert warnings == [f"back-channel logout rejected: {reason}"]
    assert token not in caplog.text


@pytest.mark.parametrize(("data", "content_type"), [
    ({}, None),
    ({"logout_token": ""}, None),
    ([("logout_token", "a"), ("logout_token", "b")], None),  # repeated
    (json.dumps({"logout_token": "x"}), "application/json"),  # not form-encoded (BCL §2.5)
], ids=["missing", "empty", "repeated", "json-body"])
async def test_request_without_exactly_one_logout_token_is_400(make_gateway: GatewayMaker, data: Any,
                                                                 content_type: str | None) -> None:
    gw = await make_gateway()
    headers = {"Content-Type": content_type} if content_type else {}
    resp = await post_logout(gw, None, data=data, headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error_description"].endswith("logout_token missing or repeated.")


async def test_replayed_token_is_rejected_on_every_replica(make_gateway: GatewayMaker, fake_op: FakeOP,
                                                          redis_client: Any, redis_prefix: str) -> None:
    gw1 = await make_gateway()
    gw2 = await make_gateway()  # a second replica on the same Redis
    cookie = await login(gw1, fake_op, "alice", "op-a1")
    token = logout_token(fake_op)
    assert (await post_logout(gw1, token)).status == 200
    # The jti is remembered until the token could no longer verify: exp (120 s) + clock skew (60 s).
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    seen = f"{redis_prefix}j:{hashlib.sha256(f'{fake_op.issuer}|{jti}'.encode()).hexdigest()}"
    assert 170_000 < redis_client.pttl(seen) <= 180_000
    assert await status_with(gw2, cookie) == 401  # ended on every replica
    for gw in (gw1, gw2):
        replay = await post_logout(gw, token)
        assert replay.status == 400
        assert (await replay.json())["error_description"].endswith("jti replayed.")
    # a new login in the same OP session, then a fresh token with its own jti works again
    cookie = await login(gw2, fake_op, "alice", "op-a1")
    assert (await post_logout(gw2, logout_token(fake_op))).status == 200
    assert await status_with(gw1, cookie) == 401


async def test_replay_rejected_with_memory_store(make_gateway: GatewayMaker, fake_op: FakeOP) -> None:
    gw = await make_gateway(store="memory")
    token = logout_token(fake_op)
    assert (await post_logout(gw, token)).status == 200
    assert (await post_logout(gw, token)).status == 400


async def test_hs256_logout_token_verifies_with_client_secret_when_allowed(make_gateway: GatewayMaker,
                                                                            fake_op: FakeOP) -> None:
    """Same rules as ID tokens: HS256 in the allow-list verifies with the client secret (REJECTIONS has the other)."""
    gw = await make_gateway(algs=("RS256", "HS256"))
    cookie = await login(gw, fake_op, "alice", "op-a1")
    forged = logout_token(fake_op, key=b"not-the-client-secret-0123456789ab", alg="HS256")
    assert (await post_logout(gw, forged)).status == 400
    assert await status_with(gw, cookie) == 200
    assert (await post_logout(gw, logout_token(fake_op, key=CLIENT_SECRET.encode(), alg="HS256"))).status == 200
    assert await status_with(gw, cookie) == 401


async def test_success_and_rejection_are_logged_and_counted(make_gateway: GatewayMaker, fake_op: FakeOP,
                                                            caplog: Any) -> None:
    gw = await make_gateway()
    await login(gw, fake_op, "alice", "op-a1")
    await login(gw, fake_op, "alice", "op-a2")
    token = logout_token(fake_op, sid=None)
    with caplog.at_level(logging.INFO, logger="gateway"):
        assert (await post_logout(gw, token)).status == 200
        assert (await post_logout(gw, token)).status == 400
    assert "back-channel logout ended 2 session(s)" in caplog.messages
    assert token not in caplog.text
    metrics = await (await gw.get("/metrics")).text()
    assert 'oidc_gateway_backchannel_logouts_total{outcome="success"} 1.0' in metrics
    assert 'oidc_gateway_backchannel_logouts_total{outcome="rejected"} 1.0' in metrics
    assert "oidc_gateway_backchannel_logout_sessions_total 2.0" in metrics


async def test_only_post_is_served(make_gateway: GatewayMaker) -> None:
    gw = await make_gateway()
    assert (await gw.get(ENDPOINT, headers=API)).status in (404, 405)
