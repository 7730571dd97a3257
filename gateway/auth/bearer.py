"""BearerAuthenticator: `Authorization: Bearer <JWT>` from API clients (RFC 6750 §2.1).

Returns None when the request carries no Bearer credential (another authenticator may apply), and
raises InvalidToken when it carries one that does not verify: a present-but-bad token is never
silently ignored in favour of a cookie. Verification is TokenVerifier.bearer (alg allow-list, JWKS,
iss, aud in access.bearer.audiences, exp/nbf/iat with skew).

A verified token is remembered by its SHA-256 until its `exp` (bounded: least recently used entries
go first), so a repeated token costs a hash and a dict lookup, not a signature check. Only verified
tokens are cached; a failure is never cached, so a token the OP has just begun to sign with a new
key verifies as soon as the JWKS has it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

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
    def __init__(self, verifier: TokenVerifier, *, clock: Callable[[], float], cache_size: int = 10_000) -> None:
        self._verifier = verifier
        self._clock = clock
        self._cache_size = cache_size
        self._verified: OrderedDict[bytes, tuple[float, Identity]] = OrderedDict()

    async def authenticate(self, request: web.Request) -> Identity | None:
        token = bearer_token(request)
        if token is None:
            return None
        digest = hashlib.sha256(token.encode()).digest()
        hit = self._verified.get(digest)
        if hit is not None:
            if self._clock() < hit[0]:
                self._verified.move_to_end(digest)
                return hit[1]
            del self._verified[digest]
        if token.count(".") != 2:
            raise InvalidToken("not a JWT")
        claims = await self._verifier.bearer(token)
        identity = Identity.from_claims(claims, access_token=token)
        self._verified[digest] = (float(claims["exp"]), identity)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return identity
