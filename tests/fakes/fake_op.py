"""A small OpenID Provider that misbehaves on demand, for tests the real OP cannot stage.

It logs every authorization request in at once (no UI), checks PKCE and client authentication at
the token endpoint, and builds ID tokens from a claims/header template the test may mutate: wrong
nonce, iss, aud, alg, kid, at_hash, an HS256 token signed with the RSA public key, and so on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

__all__ = ["FakeOP"]

CLIENT_ID = "gateway"
CLIENT_SECRET = "fake-op-secret-0123456789abcdef01"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _hs256(claims: dict[str, Any], headers: dict[str, Any], secret: bytes) -> str:
    signing_input = _b64(json.dumps({"alg": "HS256", "typ": "JWT", **headers}).encode()) + b"." + _b64(
        json.dumps(claims).encode())
    return (signing_input + b"." + _b64(hmac.new(secret, signing_input, hashlib.sha256).digest())).decode()


@dataclass
class FakeOP:
    base_url: str = ""
    advertised_issuer: str | None = None  # None: the true base_url
    discovery_status: int = 200
    jwks_status: int = 200
    token_status: int = 200
    token_error: dict[str, Any] | None = None
    token_extra: dict[str, Any] = field(default_factory=dict)
    userinfo_sub: str | None = None  # None: the logged-in sub
    claims_mutator: Callable[[dict[str, Any]], None] | None = None
    front_claims_mutator: Callable[[dict[str, Any]], None] | None = None  # the authorization response's ID token
    header_kid: str | None = "k1"
    sign_alg: str = "RS256"
    sign_key: Any = None  # None: the current RSA private key
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=lambda: {"k1": _new_key()})
    jwks_fetches: int = 0
    token_requests: list[dict[str, str]] = field(default_factory=list)
    refresh_tokens: set[str] = field(default_factory=set)
    _codes: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def issuer(self) -> str:
        return self.base_url

    def rotate_key(self, kid: str, *, keep_old: bool = True) -> None:
        if not keep_old:
            self.keys.clear()
        self.keys[kid] = _new_key()
        self.header_kid = kid

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_get("/jwks", self._jwks)
        app.router.add_get("/userinfo", self._userinfo)
        return app

    async def _discovery(self, request: web.Request) -> web.Response:
        if self.discovery_status != 200:
            return web.Response(status=self.discovery_status)
        b = self.base_url
        return web.json_response({
            "issuer": self.advertised_issuer or b, "authorization_endpoint": f"{b}/authorize",
            "token_endpoint": f"{b}/token", "jwks_uri": f"{b}/jwks", "userinfo_endpoint": f"{b}/userinfo",
            "end_session_endpoint": f"{b}/logout", "id_token_signing_alg_values_supported": ["RS256"],
        })

    async def _jwks(self, request: web.Request) -> web.Response:
        self.jwks_fetches += 1
        if self.jwks_status != 200:
            return web.Response(status=self.jwks_status)
        return web.json_response({"keys": [jwk_of(k, kid) for kid, k in self.keys.items()]})

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        code = secrets.token_urlsafe(16)
        self._codes[code] = {"nonce": q.get("nonce", ""), "challenge": q.get("code_challenge", ""),
                             "redirect_uri": q["redirect_uri"]}
        response_type = q.get("response_type", "code").split()
        params = {"state": q["state"]}
        if "code" in response_type:
            params["code"] = code
        if "id_token" in response_type:
            params["id_token"] = self.id_token(q.get("nonce", ""), code=params.get("code"), front=True)
        if q.get("response_mode") != "form_post":
            raise web.HTTPFound(str(URL(q["redirect_uri"]).update_query(params)))
        inputs = "".join(f'<input type="hidden" name="{k}" value="{v}">' for k, v in params.items())
        return web.Response(content_type="text/html", text=(
            f'<html><body onload="document.forms[0].submit()"><form method="post" action="{q["redirect_uri"]}">'
            f"{inputs}</form></body></html>"))

    def id_token(self, nonce: str, access_token: str | None = None, *, code: str | None = None,
                 front: bool = False) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.base_url, "sub": "alice", "aud": CLIENT_ID, "exp": now + 300, "iat": now,
            "nonce": nonce, "email": "alice@example.com",
        }
        for name, value in (("at_hash", access_token), ("c_hash", code)):
            if value is not None:
                digest = hashlib.sha256(value.encode()).digest()
                claims[name] = base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
        mutator = self.front_claims_mutator if front else self.claims_mutator
        if mutator:
            mutator(claims)
        key = self.sign_key if self.sign_key is not None else self.keys.get(self.header_kid or "", None)
        if key is None:
            key = next(iter(self.keys.values()))
        headers = {"kid": self.header_kid} if self.header_kid else {}
        if self.sign_alg == "none":
            return jwt.encode(claims, None, algorithm="none", headers=headers)
        if self.sign_alg == "HS256":
            # Signed by hand: PyJWT refuses PEM keys as HMAC secrets, and the key-confusion test needs one.
            return _hs256(claims, headers, self.sign_key)
        return jwt.encode(claims, key, algorithm=self.sign_alg, headers=headers)

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        self.token_requests.append({k: str(v) for k, v in form.items()}
                                   | {"authorization": request.headers.get("Authorization", "")})
        if self.token_error is not None:
            return web.json_response(self.token_error, status=self.token_status)
        if self.token_status != 200:
            return web.Response(status=self.token_status, text="<html>oops</html>")
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"error": "invalid_client"}, status=401)
        if form.get("grant_type") == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return web.json_response({"error": "invalid_grant"}, status=400)
            return web.json_response(self._tokens(nonce=None))
        grant = self._codes.pop(str(form.get("code")), None)
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"]:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE"}, status=400)
        body = {**self._tokens(nonce=grant["nonce"]), **self.token_extra}
        return web.json_response({k: v for k, v in body.items() if v is not None})

    def _tokens(self, *, nonce: str | None) -> dict[str, Any]:
        access_token, refresh_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.refresh_tokens.add(refresh_token)
        body: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer", "expires_in": 300,
                                "refresh_token": refresh_token}
        if nonce is not None:
            body["id_token"] = self.id_token(nonce, access_token)
        return body

    async def _userinfo(self, request: web.Request) -> web.Response:
        return web.json_response({"sub": self.userinfo_sub or "alice", "email": "alice@example.com"})
