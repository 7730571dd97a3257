"""The test OP (tests/op/server.js) and the browser driver, exercised without the gateway.

A tiny aiohttp app plays the Relying Party: it serves /oauth2/callback (GET and form_post) and
/signed-out, and records the parameters that arrive there.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from tests.support.op import LoginResult, TestOP, browser_login

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
Json = dict[str, Any]


@dataclass(frozen=True)
class AuthRequest:
    url: URL
    state: str
    nonce: str
    code_verifier: str


@dataclass
class Flow:
    """A Relying Party's view: the OP, its metadata, a browser, a back channel and the callback hits."""

    op: TestOP
    metadata: Json
    rp: TestServer
    hits: list[dict[str, str]]
    browser: aiohttp.ClientSession
    backchannel: aiohttp.ClientSession

    @property
    def callback(self) -> str:
        return str(self.rp.make_url("/oauth2/callback"))

    def auth_request(self, client_id: str, redirect_uri: str | None = None, **extra: str) -> AuthRequest:
        state, nonce, verifier = (secrets.token_urlsafe(n) for n in (16, 16, 48))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri or self.callback,
            "scope": "openid profile email",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge.decode(),
            "code_challenge_method": "S256",
            **extra,
        }
        url = URL(self.metadata["authorization_endpoint"]).with_query(params)
        return AuthRequest(url, state, nonce, verifier)

    async def login(self, url: str | URL, **kwargs: Any) -> LoginResult:
        return await browser_login(self.browser, url, **kwargs)

    async def token(
        self, client_id: str, form: dict[str, str], *, endpoint: str = "token_endpoint"
    ) -> tuple[int, Json]:
        """POST to a token-ish endpoint, authenticating as the client is registered to."""
        secret = self.op.clients[client_id]
        headers = {}
        if secret is None or client_id == "gateway-post":
            form = {**form, "client_id": client_id, **({"client_secret": secret} if secret else {})}
        else:  # these ids and secrets need no RFC 6749 §2.3.1 form-encoding
            headers["Authorization"] = aiohttp.encode_basic_auth(client_id, secret)
        async with self.backchannel.post(self.metadata[endpoint], data=form, headers=headers) as resp:
            return resp.status, await resp.json()

    async def introspect(self, token: str) -> Json:
        status, result = await self.token("gateway", {"token": token}, endpoint="introspection_endpoint")
        assert status == 200, result
        return result

    async def login_and_exchange(self, client_id: str, **extra: str) -> tuple[AuthRequest, Json]:
        request = self.auth_request(client_id, **extra)
        result = await self.login(request.url)
        assert result.status == 200 and result.url.path == "/oauth2/callback", result.body
        callback = self.hits[-1]
        assert callback["state"] == request.state
        assert callback["iss"] == self.op.issuer  # RFC 9207
        form = {
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": self.callback,
            "code_verifier": request.code_verifier,
        }
        status, tokens = await self.token(client_id, form)
        assert status == 200, tokens
        return request, tokens

    async def signing_key(self, token: str) -> jwt.PyJWK:
        async with self.backchannel.get(self.metadata["jwks_uri"]) as resp:
            keys = jwt.PyJWKSet.from_dict(await resp.json())
        return keys[jwt.get_unverified_header(token)["kid"]]

    def logout_url(self, id_token: str) -> URL:
        return URL(self.metadata["end_session_endpoint"]).with_query(
            id_token_hint=id_token, post_logout_redirect_uri=str(self.rp.make_url("/signed-out")), state="bye"
        )


@asynccontextmanager
async def open_flow(op: TestOP, aiohttp_server: ServerFactory) -> AsyncIterator[Flow]:
    hits: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        params = request.query if request.method == "GET" else await request.post()
        hits.append({k: str(v) for k, v in params.items()})
        return web.Response(text=f"reached {request.path}")

    app = web.Application()
    app.router.add_route("*", "/oauth2/callback", record)
    app.router.add_get("/signed-out", record)
    rp = await aiohttp_server(app)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser,
        aiohttp.ClientSession() as backchannel,
    ):
        async with backchannel.get(f"{op.issuer}/.well-known/openid-configuration") as resp:
            assert resp.status == 200
            metadata = await resp.json()
        yield Flow(op, metadata, rp, hits, browser, backchannel)


@pytest.fixture
async def flow(op: TestOP, aiohttp_server: ServerFactory) -> AsyncIterator[Flow]:
    async with open_flow(op, aiohttp_server) as opened:
        yield opened


async def test_code_flow_with_pkce_issues_all_tokens(flow: Flow) -> None:
    request, tokens = await flow.login_and_exchange(
        "gateway", scope="openid profile email offline_access", prompt="consent"
    )

    assert tokens["token_type"] == "Bearer" and tokens["access_token"] and tokens["refresh_token"]
    assert jwt.get_unverified_header(tokens["id_token"])["alg"] == "RS256"
    key = await flow.signing_key(tokens["id_token"])
    claims = jwt.decode(tokens["id_token"], key, algorithms=["RS256"], audience="gateway", issuer=flow.op.issuer)
    assert claims["sub"] == "alice" and claims["nonce"] == request.nonce
    # conformIdTokenClaims=false: scope claims are in the ID token itself
    assert claims["email"] == "alice@example.com" and claims["groups"] == ["admins", "staff"]
    assert "phone_number" not in claims  # phone scope not requested


async def test_offline_access_needs_prompt_consent(flow: Flow) -> None:
    _, tokens = await flow.login_and_exchange("gateway", scope="openid offline_access")
    assert tokens["access_token"] and "refresh_token" not in tokens


async def test_hs256_id_token_verifies_with_client_secret(flow: Flow) -> None:
    _, tokens = await flow.login_and_exchange("gateway-hs")
    raw, secret = tokens["id_token"], flow.op.clients["gateway-hs"]
    assert secret is not None and jwt.get_unverified_header(raw)["alg"] == "HS256"
    claims = jwt.decode(raw, secret, algorithms=["HS256"], audience="gateway-hs", issuer=flow.op.issuer)
    assert claims["preferred_username"] == "alice"
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(raw, "not-the-secret-0123456789abcdef0123", algorithms=["HS256"], audience="gateway-hs")


async def test_es256_client_and_client_secret_post(flow: Flow) -> None:
    _, es = await flow.login_and_exchange("gateway-es")
    key = await flow.signing_key(es["id_token"])
    assert jwt.decode(es["id_token"], key, algorithms=["ES256"], audience="gateway-es")["sub"] == "alice"

    _, post = await flow.login_and_exchange("gateway-post")
    assert jwt.get_unverified_header(post["id_token"])["alg"] == "RS256"


async def test_public_client_requires_pkce(flow: Flow) -> None:
    without = flow.auth_request("gateway-public")
    query = {k: v for k, v in without.url.query.items() if not k.startswith("code_challenge")}
    await flow.login(without.url.with_query(query))
    assert flow.hits[-1]["error"] == "invalid_request" and "PKCE" in flow.hits[-1]["error_description"]

    _, tokens = await flow.login_and_exchange("gateway-public")
    assert tokens["id_token"] and tokens["access_token"]


async def test_wrong_password_stays_on_login_page(flow: Flow) -> None:
    result = await flow.login(flow.auth_request("gateway").url, username="alice", password="wrong")
    assert result.status == 200
    assert result.url.path.startswith("/interaction/") and result.url.path.endswith("/login")
    assert "Invalid username or password" in result.body and 'name="password"' in result.body
    assert flow.hits == []


async def test_denied_consent_returns_access_denied(flow: Flow) -> None:
    request = flow.auth_request("gateway")
    result = await flow.login(request.url, username="bob", password="bob-password", consent=False)
    assert result.url.path == "/oauth2/callback"
    assert flow.hits == [
        {
            "error": "access_denied",
            "error_description": "End-User aborted interaction",
            "state": request.state,
            "iss": flow.op.issuer,
        }
    ]


@pytest.mark.parametrize("response_type", ["code id_token", "id_token"])
async def test_form_post_is_submitted_by_the_driver(flow: Flow, response_type: str) -> None:
    request = flow.auth_request("gateway", response_type=response_type, response_mode="form_post")
    result = await flow.login(request.url)
    assert result.status == 200 and result.url.path == "/oauth2/callback"
    hit = flow.hits[-1]
    assert set(hit) >= {*response_type.split(), "state"} and hit["state"] == request.state
    assert jwt.decode(hit["id_token"], options={"verify_signature": False})["nonce"] == request.nonce


async def test_resource_indicator_yields_jwt_access_tokens(flow: Flow) -> None:
    _, tokens = await flow.login_and_exchange("gateway", scope="openid email api:read", resource="urn:gateway:api")
    key = await flow.signing_key(tokens["access_token"])
    claims = jwt.decode(
        tokens["access_token"], key, algorithms=["RS256"], audience="urn:gateway:api", issuer=flow.op.issuer
    )
    assert claims["sub"] == "alice" and claims["client_id"] == "gateway" and claims["scope"] == "api:read"

    form = {"grant_type": "client_credentials", "resource": "urn:gateway:api", "scope": "api:write"}
    status, machine = await flow.token("gateway-post", form)
    assert status == 200, machine
    claims = jwt.decode(machine["access_token"], key, algorithms=["RS256"], audience="urn:gateway:api")
    assert claims["sub"] == "gateway-post" and claims["scope"] == "api:write"


@pytest.mark.parametrize(
    "redirect_uri",
    ["http://evil.invalid/oauth2/callback", "https://127.0.0.1/oauth2/callback", "http://127.0.0.1:8080/other"],
)
async def test_non_loopback_callback_is_rejected(flow: Flow, redirect_uri: str) -> None:
    result = await flow.login(flow.auth_request("gateway", redirect_uri).url)
    assert result.status == 400 and "redirect_uri did not match" in result.body
    assert result.url.origin() == URL(flow.op.issuer).origin()


async def test_stats_count_grants_and_code_reuse_revokes_grant(flow: Flow) -> None:
    flow.op.reset_stats()
    request, tokens = await flow.login_and_exchange("gateway", scope="openid offline_access", prompt="consent")
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    status, refreshed = await flow.token("gateway", refresh)
    assert status == 200 and refreshed["id_token"] and refreshed["access_token"] != tokens["access_token"]
    # A young refresh token of a confidential client is not rotated (rotateRefreshToken default).
    assert refreshed["refresh_token"] == tokens["refresh_token"]

    replay = {
        "grant_type": "authorization_code",
        "code": flow.hits[-1]["code"],
        "redirect_uri": flow.callback,
        "code_verifier": request.code_verifier,
    }
    status, error = await flow.token("gateway", replay)
    assert status == 400 and error["error"] == "invalid_grant"
    # RFC 6749 §4.1.2: a replayed code revokes what was issued from it
    status, error = await flow.token("gateway", refresh)
    assert status == 400 and error["error"] == "invalid_grant"
    assert (await flow.introspect(refreshed["access_token"]))["active"] is False

    assert flow.op.stats() == {
        "success": {"authorization_code": 1, "refresh_token": 1},
        "error": {"authorization_code": 1, "refresh_token": 1},
    }
    flow.op.reset_stats()
    assert flow.op.stats() == {"success": {}, "error": {}}


async def test_confirmed_logout_ends_the_op_session(flow: Flow) -> None:
    _, tokens = await flow.login_and_exchange("gateway", scope="openid profile email offline_access", prompt="consent")
    # The OP session is live: another authorization needs neither password nor consent.
    silent = await flow.login(flow.auth_request("gateway").url, password="x")
    assert silent.url.path == "/oauth2/callback" and "code" in flow.hits[-1]
    assert not any("/interaction/" in u for u in silent.visited)

    result = await flow.login(flow.logout_url(tokens["id_token"]))
    assert result.url.path == "/signed-out" and flow.hits[-1] == {"state": "bye"}
    assert any(u.endswith("/session/end/confirm") for u in result.visited)

    again = await flow.login(flow.auth_request("gateway").url, password="x")
    assert again.url.path.endswith("/login") and "Invalid username or password" in again.body
    # offline_access grants outlive the OP session: the refresh token still works
    status, _ = await flow.token("gateway", {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]})
    assert status == 200


async def test_declined_logout_keeps_op_session_but_revokes_client_grant(flow: Flow) -> None:
    _, tokens = await flow.login_and_exchange("gateway")
    assert (await flow.introspect(tokens["access_token"]))["active"] is True

    declined = await flow.login(flow.logout_url(tokens["id_token"]), logout=False)
    assert declined.url.path == "/signed-out" and flow.hits[-1] == {"state": "bye"}
    assert (await flow.introspect(tokens["access_token"]))["active"] is False

    # Still signed in at the OP (no password), but this client must ask for consent again.
    again = await flow.login(flow.auth_request("gateway").url, password="x")
    assert again.url.path == "/oauth2/callback" and "code" in flow.hits[-1]
    assert not any(u.endswith("/login") for u in again.visited)
    assert any(u.endswith("/confirm") for u in again.visited)


async def test_driver_refuses_to_leave_loopback(flow: Flow) -> None:
    with pytest.raises(RuntimeError, match="refusing to leave loopback"):
        await flow.login("http://evil.invalid/start")


async def test_stop_at_returns_the_redirect_to_the_callback(flow: Flow) -> None:
    request = flow.auth_request("gateway")
    result = await flow.login(request.url, stop_at=lambda url: url.path == "/oauth2/callback")
    assert result.status == 303 and flow.hits == []
    location = URL(result.headers["Location"])
    assert location.query["state"] == request.state and location.query["code"]


async def test_token_lifetimes_come_from_the_environment(aiohttp_server: ServerFactory) -> None:
    short = TestOP(access_token_ttl=120, id_token_ttl=60)
    short.start()
    try:
        async with open_flow(short, aiohttp_server) as flow:
            _, tokens = await flow.login_and_exchange("gateway")
    finally:
        short.stop()
    assert tokens["expires_in"] == 120
    claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 60
