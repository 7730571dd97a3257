"""BearerAuthenticator: `Authorization: Bearer <JWT>` from API clients (RFC 6750 §2.1).

Returns None when the request carries no Bearer credential (another authenticator may apply), and
raises InvalidToken when it carries one that does not verify: a present-but-bad token is never
silently ignored in favour of a cookie. Verification is TokenVerifier.bearer (alg allow-list, JWKS,
iss, aud in access.bearer.audiences, exp/nbf/iat with skew).
"""

from __future__ import annotations

from aiohttp import web

from gateway.auth.identity import Identity
from gateway.errors import InvalidToken
from gateway.oidc.verify import TokenVerifier

__all__ = ["BearerAuthenticator", "bearer_token"]


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


class BearerAuthenticator:
    def __init__(self, verifier: TokenVerifier) -> None:
        self._verifier = verifier

    async def authenticate(self, request: web.Request) -> Identity | None:
        token = bearer_token(request)
        if token is None:
            return None
        if token.count(".") != 2:
            raise InvalidToken("not a JWT")
        claims = await self._verifier.bearer(token)
        return Identity.from_claims(claims, access_token=token)
