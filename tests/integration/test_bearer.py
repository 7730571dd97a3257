"""API clients with Bearer JWTs issued by the real OP (client_credentials + resource indicator)."""

from __future__ import annotations

import base64
import json
from typing import Any

import aiohttp

API = {"Accept": "application/json"}


async def jwt_access_token(op: Any, client_id: str = "gateway") -> str:
    basic = base64.b64encode(f"{client_id}:{op.clients[client_id]}".encode()).decode()
    async with aiohttp.ClientSession() as http:
        resp = await http.post(f"{op.issuer}/token", headers={"Authorization": f"Basic {basic}"},
                               data={"grant_type": "client_credentials", "resource": "urn:gateway:api",
                                     "scope": "api:read"})
        token = (await resp.json())["access_token"]
    assert token.count(".") == 2
    return str(token)


async def test_bearer_jwt_from_the_op_is_accepted_and_forwarded(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"]}})
    token = await jwt_access_token(op)
    for _ in range(2):  # the second time from the verified-token cache
        resp = await gw.client.get("/api/items", headers={**API, "Authorization": f"Bearer {token}",
                                                          "X-Auth-Request-User": "spoofed"})
        assert resp.status == 200
        seen = {k.lower(): v for k, v in json.loads(await resp.text())["headers"]}
        assert seen["authorization"] == f"Bearer {token}"
        assert seen["x-auth-request-user"] == "gateway"  # client_credentials: the subject is the client


async def test_bearer_jwt_for_another_audience_is_refused(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory()  # audiences default to [client_id]: urn:gateway:api is not ours
    token = await jwt_access_token(op)
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    assert (await resp.json())["error"] == "invalid_token"


async def test_tampered_bearer_jwt_is_refused(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"]}})
    token = await jwt_access_token(op)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "admin"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    for forged in (f"{header}.{forged_payload}.{signature}", f"{header}.{payload}.{signature[:-4]}AAAA"):
        resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {forged}"})
        assert resp.status == 401


async def test_bearer_disabled_ignores_the_token(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory(access={"bearer": {"enabled": False, "audiences": ["urn:gateway:api"]}})
    token = await jwt_access_token(op)
    resp = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {token}"})
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"


async def test_client_credentials_token_passes_one_scope_rule_and_fails_another(gateway_factory: Any,
                                                                                  op: Any) -> None:
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"]}, "rules": [
        {"path": "^/read", "required_scopes": ["api:read"]},
        {"path": "^/write", "required_scopes": ["api:write"]},
    ]})
    token = await jwt_access_token(op)  # client_credentials, scope api:read
    headers = {**API, "Authorization": f"Bearer {token}"}
    assert (await gw.client.get("/read/items", headers=headers)).status == 200
    denied = await gw.client.get("/write/items", headers=headers)
    assert denied.status == 403 and (await denied.json())["error"] == "access_denied"
