"""API-gateway Bearer modes: introspection of opaque tokens (real OP), client-credentials claims,
trusted issuers (the fake OP as a second issuer), ID tokens as Bearer (opt-in) and the signed
identity assertion header with its JWKS at /.well-known/jwks.json."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.fakes.fake_op import CLIENT_SECRET, FakeOP
from tests.integration.test_bearer import jwt_access_token

API = {"Accept": "application/json"}


def _basic(op: Any, client_id: str = "gateway") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{op.clients[client_id]}".encode()).decode()}


async def opaque_access_token(op: Any) -> str:
    """client_credentials without a resource indicator: oidc-provider issues an opaque token."""
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{op.issuer}/token", headers=_basic(op), data={"grant_type": "client_credentials"})
        token = str((await resp.json())["access_token"])
    assert token.count(".") != 2
    return token


async def revoke(op: Any, token: str) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{op.issuer}/token/revocation", headers=_basic(op),
                               data={"token": token, "token_type_hint": "access_token"})
        assert resp.status == 200


@pytest.fixture
async def introspection_relay(op: Any, aiohttp_server: Any) -> AsyncIterator[tuple[str, list[str]]]:
    """A counting relay in front of the real OP's introspection_endpoint: (url, tokens asked about)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{op.issuer}/.well-known/openid-configuration") as resp:
            target = (await resp.json())["introspection_endpoint"]
        seen: list[str] = []

        async def relay(request: web.Request) -> web.Response:
            form = await request.post()
            seen.append(str(form["token"]))
            headers = {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "accept")}
            async with http.post(target, data=dict(form), headers=headers) as upstream:
                return web.Response(status=upstream.status, body=await upstream.read(),
                                    content_type="application/json")

        app = web.Application()
        app.router.add_post("/introspect", relay)
        server = await aiohttp_server(app)
        yield str(server.make_url("/introspect")), seen


async def test_opaque_token_is_introspected_once_and_carries_client_claims(
        gateway_factory: Any, op: Any, introspection_relay: tuple[str, list[str]]) -> None:
    url, seen = introspection_relay
    gw = await gateway_factory(oidc={"introspection_endpoint": url}, access={"bearer": {"introspection": True}})
    token = await opaque_access_token(op)
    for _ in range(2):
        resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {token}"})
        assert resp.status == 200
        seen_headers = {k.lower(): v for k, v in json.loads(await resp.text())["headers"]}
        assert seen_headers["x-auth-request-user"] == "gateway"  # no user: the subject is the client
    assert seen == [token]  # the second request came from the cache
    resp = await gw.client.get("/oauth2/userinfo", headers={**API, "Authorization": f"Bearer {token}"})
    claims = await resp.json()
    assert claims["client_id"] == "gateway" and claims["active"] is True and claims["sub"] == "gateway"


async def test_revoked_opaque_token_is_refused_and_the_refusal_cached(
        gateway_factory: Any, op: Any, introspection_relay: tuple[str, list[str]], clock: Any) -> None:
    url, seen = introspection_relay
    gw = await gateway_factory(oidc={"introspection_endpoint": url}, access={"bearer": {"introspection": True}})
    token = await opaque_access_token(op)
    await revoke(op, token)
    for _ in range(2):
        resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {token}"})
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert seen == [token]  # negative result cached
    clock.advance(31)  # past introspection_negative_ttl: the OP is asked again
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {token}"})
    assert resp.status == 401 and seen == [token, token]


async def test_introspection_uses_the_discovered_endpoint(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"bearer": {"introspection": True}})
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {await opaque_access_token(op)}"})
    assert resp.status == 200


async def test_opaque_token_without_introspection_is_refused(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory()
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {await opaque_access_token(op)}"})
    assert resp.status == 401


async def test_client_credentials_jwt_claims_reach_the_identity(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"]}})
    token = await jwt_access_token(op)
    resp = await gw.client.get("/oauth2/userinfo", headers={**API, "Authorization": f"Bearer {token}"})
    assert resp.status == 200
    claims = await resp.json()
    assert claims["sub"] == "gateway" and claims["client_id"] == "gateway"
    assert "api:read" in claims["scope"].split()


# --- trusted issuers: the fake OP as a second issuer ----------------------------------------------


def _fake_token(fake: FakeOP, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": fake.issuer, "sub": "svc-b", "aud": "api-b", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, fake.keys["k1"], algorithm="RS256", headers={"kid": "k1"})


async def test_second_trusted_issuer_with_its_own_keys_and_audiences(gateway_factory: Any, op: Any,
                                                                      fake_op: FakeOP) -> None:
    trusted = [{"issuer": fake_op.issuer, "jwks_uri": f"{fake_op.issuer}/jwks", "audiences": ["api-b"]}]
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"], "trusted_issuers": trusted}})
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {_fake_token(fake_op)}"})
    assert resp.status == 200
    assert dict((k.lower(), v) for k, v in json.loads(await resp.text())["headers"])["x-auth-request-user"] == "svc-b"
    # The gateway's own OP stays the default issuer.
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {await jwt_access_token(op)}"})
    assert resp.status == 200
    refused = [
        _fake_token(fake_op, aud="urn:gateway:api"),  # the other issuer's audiences do not apply
        _fake_token(fake_op, iss=op.issuer),  # our OP's issuer, the second issuer's key
        _fake_token(fake_op, iss="http://127.0.0.1:9/unknown"),  # unknown issuer
    ]
    for token in refused:
        resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {token}"})
        assert resp.status == 401


async def test_untrusted_second_issuer_is_refused(gateway_factory: Any, op: Any, fake_op: FakeOP) -> None:
    gw = await gateway_factory(access={"bearer": {"audiences": ["api-b"]}})
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {_fake_token(fake_op)}"})
    assert resp.status == 401


# --- ID tokens as Bearer (the fake OP as the gateway's OP) ----------------------------------------


@pytest.fixture
def fake_gateway(fake_op_gateway: Any) -> Any:
    async def make(oidc: dict[str, Any] | None = None, bearer: dict[str, Any] | None = None) -> TestClient:
        return (await fake_op_gateway(oidc=oidc or {}, access={"bearer": bearer or {}})).client

    return make


async def test_id_token_as_bearer_only_when_enabled(fake_gateway: Any, fake_op: FakeOP) -> None:
    id_token = fake_op.id_token("some-nonce")
    off = await fake_gateway()
    resp = await off.get("/api", headers={**API, "Authorization": f"Bearer {id_token}"})
    assert resp.status == 401
    on = await fake_gateway(bearer={"accept_id_tokens": True})
    resp = await on.get("/api", headers={**API, "Authorization": f"Bearer {id_token}"})
    assert resp.status == 200
    assert dict((k.lower(), v) for k, v in json.loads(await resp.text())["headers"])["x-auth-request-user"] == "alice"
    fake_op.claims_mutator = lambda claims: claims.update(aud="someone-else")
    resp = await on.get("/api", headers={**API, "Authorization": f"Bearer {fake_op.id_token('n')}"})
    assert resp.status == 401


async def test_hs256_id_token_as_bearer_only_when_hs256_is_allowed(fake_gateway: Any, fake_op: FakeOP) -> None:
    fake_op.sign_alg, fake_op.sign_key = "HS256", CLIENT_SECRET.encode()
    id_token = fake_op.id_token("some-nonce")
    rs_only = await fake_gateway(bearer={"accept_id_tokens": True})
    resp = await rs_only.get("/api", headers={**API, "Authorization": f"Bearer {id_token}"})
    assert resp.status == 401
    with_hs = await fake_gateway(oidc={"id_token_signing_algs": ["RS256", "HS256"]}, bearer={"accept_id_tokens": True})
    resp = await with_hs.get("/api", headers={**API, "Authorization": f"Bearer {id_token}"})
    assert resp.status == 200


# --- the signed identity assertion ----------------------------------------------------------------


async def test_identity_assertion_verifies_against_the_gateway_jwks(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"]}},
                               identity_assertion={"enabled": True, "audience": "backend"})
    token = await jwt_access_token(op)
    resp = await gw.client.get("/api", headers=[("Accept", "application/json"), ("Authorization", f"Bearer {token}"),
                                                ("X-Auth-Request-Assertion", "forged"),
                                                ("X_Auth_Request_Assertion", "forged-too")])
    assert resp.status == 200
    received = [(k.lower(), v) for k, v in json.loads(await resp.text())["headers"]]
    assertions = [v for k, v in received if k.replace("_", "-") == "x-auth-request-assertion"]
    assert len(assertions) == 1 and "forged" not in assertions[0]
    jwks = await (await gw.client.get("/.well-known/jwks.json")).json()
    header = jwt.get_unverified_header(assertions[0])
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(assertions[0], key, algorithms=["ES256"], audience="backend", issuer=gw.url)
    assert claims["sub"] == "gateway" and claims["exp"] - claims["iat"] == 60


async def test_forward_auth_answer_carries_the_identity_assertion(gateway_factory: Any, op: Any) -> None:
    """nginx/Traefik copy the 202's headers to the app: the assertion must be among them."""
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"]}},
                               identity_assertion={"enabled": True, "audience": "backend"})
    token = await jwt_access_token(op)
    resp = await gw.client.get("/oauth2/auth", headers={"Authorization": f"Bearer {token}",
                                                        "X-Original-URI": "/api/x"})
    assert resp.status == 202
    jwks = await (await gw.client.get("/.well-known/jwks.json")).json()
    assertion = resp.headers["X-Auth-Request-Assertion"]
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(assertion)["kid"]]
    claims = jwt.decode(assertion, key, algorithms=["ES256"], audience="backend", issuer=gw.url)
    assert claims["sub"] == "gateway" and resp.headers["X-Auth-Request-User"] == "gateway"


async def test_identity_assertion_custom_header_is_stripped_from_clients(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"public_paths": ["^/public/"]},
                               identity_assertion={"enabled": True, "header": "X-User-Assertion",
                                                   "algorithm": "RS256"})
    resp = await gw.client.get("/public/x", headers={**API, "X-User-Assertion": "forged"})
    assert resp.status == 200
    received = {k.lower() for k, _ in json.loads(await resp.text())["headers"]}
    assert "x-user-assertion" not in received  # no identity on a public path: no assertion at all


async def test_without_identity_assertion_nothing_is_signed_or_served(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"]}})
    token = await jwt_access_token(op)
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {token}"})
    received = {k.lower() for k, _ in json.loads(await resp.text())["headers"]}
    assert "x-auth-request-assertion" not in received
    resp = await gw.client.get("/.well-known/jwks.json", headers={**API, "Authorization": f"Bearer {token}"})
    assert json.loads(await resp.text())["path"] == "/.well-known/jwks.json"  # proxied to the upstream
