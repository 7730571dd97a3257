"""BearerAuthenticator: `Authorization: Bearer <JWT>` from API clients (RFC 6750 §2.1).

Returns None when the request carries no Bearer credential (another authenticator may apply), and
raises InvalidToken when it carries one that does not verify: a present-but-bad token is never
silently ignored in favour of a cookie. Verification is TokenVerifier.bearer (alg allow-list, JWKS,
iss, aud in access.bearer.audiences, exp/nbf/iat with skew).

A verified token is remembered, keyed by the token itself, until its `exp` (bounded: least recently
used entries go first), so a repeated token costs a dict lookup, not a signature check. The key is the
string the Identity keeps anyway (as its access token); a digest would add a SHA-256 per request
(about 20k instructions, benchmarks/instructions.py) for no gain, since a dict compares keys exactly.
Only verified tokens are cached; a failure is never cached, so a token the OP has just begun to sign
with a new key verifies as soon as the JWKS has it.

Opaque tokens (not three dot-separated parts) are refused unless introspection is on; then the OP
decides (RFC 7662, OIDCClient.introspect) and TokenVerifier.introspected checks iss/aud/exp where the
response has them. An active result is cached until its `exp` (without one, as briefly as a negative
result); an inactive or rejected one for `negative_ttl` (RFC 7662 §4: a revoked token may stay usable
that long after revocation only when it was active before; never longer than its exp). Both caches
are bounded. An OP that cannot answer is a 503, never a cached "inactive".
The Identity's claims keep everything verified, e.g. `scope` and `client_id` for access rules.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from aiohttp import web

from gateway.auth.identity import Identity
from gateway.errors import GatewayError, InvalidToken
from gateway.oidc.verify import Claims, TokenVerifier

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
    def __init__(self, verifier: TokenVerifier, *, clock: Callable[[], float], cache_size: int = 10_000,
                 introspect: Callable[[str], Awaitable[Claims | None]] | None = None,
                 negative_ttl: float = 30.0,
                 on_judged: Callable[[GatewayError | None], None] | None = None) -> None:
        self._on_judged = on_judged  # each token judged: None when it was accepted, else the error raised
        self._verifier = verifier
        self._clock = clock
        self._cache_size = cache_size
        self._verified: OrderedDict[str, tuple[float, Identity]] = OrderedDict()  # token -> until, identity
        self._introspect = introspect
        self._negative_ttl = negative_ttl
        # SHA-256 of a refused token -> until (introspection only). A digest here, not the token: refused
        # tokens come from anyone, and 10,000 of them at up to the header size would be a lot of memory.
        self._refused: OrderedDict[bytes, float] = OrderedDict()

    async def authenticate(self, request: web.Request) -> Identity | None:
        token = bearer_token(request)
        if token is None:
            return None
        hit = self._verified.get(token)
        if hit is not None:
            if self._clock() < hit[0]:
                self._verified.move_to_end(token)
                if self._on_judged is not None:
                    self._on_judged(None)
                return hit[1]
            del self._verified[token]
        try:
            identity = await self._judge(token)
        except GatewayError as exc:  # InvalidToken, or e.g. the OP's keys could not be loaded
            if self._on_judged is not None:
                self._on_judged(exc)
            raise
        if self._on_judged is not None:
            self._on_judged(None)
        return identity

    async def _judge(self, token: str) -> Identity:
        """A token not in the cache: verified (or introspected), remembered when good."""
        if token.count(".") != 2:
            if self._introspect is None:
                raise InvalidToken("not a JWT")
            return await self._introspected(token)
        claims = await self._verifier.bearer(token)
        return self._remember(token, float(claims["exp"]), Identity.from_claims(claims, access_token=token))

    def _remember(self, token: str, until: float, identity: Identity) -> Identity:
        self._verified[token] = (until, identity)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return identity

    async def _introspected(self, token: str) -> Identity:
        assert self._introspect is not None  # noqa: S101 - checked by the caller
        now = self._clock()
        digest = hashlib.sha256(token.encode()).digest()
        refused_until = self._refused.get(digest)
        if refused_until is not None:
            if now < refused_until:
                raise InvalidToken("token inactive")
            del self._refused[digest]
        try:
            response = await self._introspect(token)
            if response is None:
                raise InvalidToken("token inactive")
            claims = self._verifier.introspected(response)
        except InvalidToken:
            self._refused[digest] = now + self._negative_ttl
            if len(self._refused) > self._cache_size:
                self._refused.popitem(last=False)
            raise
        exp = claims.get("exp")
        until = float(exp) if isinstance(exp, int | float) else now + self._negative_ttl
        return self._remember(token, until, Identity.from_claims(claims, access_token=token))
