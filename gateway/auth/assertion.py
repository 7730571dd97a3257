"""IdentityAssertion: a short JWT, signed by the gateway, telling an upstream who the user is.

Trusts: the verified Identity only. The upstream verifies the JWT (ES256 or RS256) against the
public JWK set the gateway serves at `GET /.well-known/jwks.json`; claims are `iss` (public_url),
`aud` (when configured), `sub`, `email`, `preferred_username`, `groups`, `iat`, `exp` (iat + ttl)
and a random `jti`. Every client-sent header of the configured name (compared case-insensitively,
`_` read as `-`, as gateway.proxy.headers does) is removed before the gateway's own is set, so a
client can never hand the upstream an assertion of its choosing.

The signing key comes from identity_assertion.private_key(_file); without one a key is generated at
start-up and lives only in this process: with several replicas or workers each would sign with a key
the others do not publish, so configure a shared key there (config validation insists for workers).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from multidict import CIMultiDict

from gateway.auth.identity import Identity
from gateway.config import IdentityAssertionSettings

__all__ = ["IdentityAssertion"]


def _private_key(settings: IdentityAssertionSettings) -> Any:
    if settings.private_key is not None:
        key = serialization.load_pem_private_key(settings.private_key.get_secret_value().encode(), password=None)
        wanted = ec.EllipticCurvePrivateKey if settings.algorithm == "ES256" else rsa.RSAPrivateKey
        if not isinstance(key, wanted):
            raise ValueError(f"identity_assertion.private_key does not fit algorithm {settings.algorithm}")
        return key
    if settings.algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


class IdentityAssertion:
    def __init__(self, settings: IdentityAssertionSettings, *, issuer: str, clock: Callable[[], float]) -> None:
        self._settings = settings
        self._issuer = issuer
        self._clock = clock
        self._key = _private_key(settings)
        algorithm = jwt.get_algorithm_by_name(settings.algorithm)
        public: dict[str, Any] = json.loads(algorithm.to_jwk(self._key.public_key()))
        # RFC 7638 thumbprint: the same key always gets the same kid, on every replica.
        self._kid = _thumbprint(public)
        self._jwks = {"keys": [{**public, "kid": self._kid, "use": "sig", "alg": settings.algorithm}]}
        self.header = settings.header
        self._norm = settings.header.lower()

    def sign(self, identity: Identity) -> str:
        now = int(self._clock())
        claims: dict[str, Any] = {"iss": self._issuer, "sub": identity.sub, "iat": now,
                                  "exp": now + int(self._settings.ttl), "jti": secrets.token_urlsafe(12)}
        if self._settings.audience is not None:
            claims["aud"] = self._settings.audience
        if identity.email:
            claims["email"] = identity.email
        if identity.username:
            claims["preferred_username"] = identity.username
        if identity.groups:
            claims["groups"] = list(identity.groups)
        return jwt.encode(claims, self._key, algorithm=self._settings.algorithm,
                          headers={"kid": self._kid, "typ": "JWT"})

    def apply(self, headers: CIMultiDict[str], identity: Identity | None) -> None:
        """Remove every client copy of the header, then set the gateway's own when there is an identity."""
        for name in [n for n in headers if n.lower().replace("_", "-") == self._norm]:
            headers.popall(name, None)
        if identity is not None:
            headers[self.header] = self.sign(identity)

    async def jwks(self, request: web.Request) -> web.Response:
        """GET /.well-known/jwks.json: the public key(s) upstreams verify assertions with."""
        return web.json_response(self._jwks, headers={"Cache-Control": "public, max-age=300"})


def _thumbprint(jwk: dict[str, Any]) -> str:
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({k: jwk[k] for k in members}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
