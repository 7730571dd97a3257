"""KeySet: the provider's signing keys (RFC 7517 JWKS), cached.

Trusts: keys fetched from the provider's `jwks_uri`. A token whose `kid` is unknown (or, through
TokenVerifier, whose signature fails under a known kid: the OP replaced the key) triggers one
re-fetch, at most once per `min_refresh_interval` (so a flood of forged kids cannot hammer the OP);
a failed fetch keeps the last good set. A set older than `max_age` is re-fetched (same rate limit) when
next used, so a key the provider has withdrawn stops verifying within `max_age` even when no unknown
kid ever comes along; while the OP is down the old set goes on serving. Keys unusable for signatures
(`use` other than `sig`) and keys that do not parse are skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt

from gateway.errors import InvalidToken, ProviderUnavailable

__all__ = ["DEFAULT_MAX_AGE", "KeySet", "key_type_for"]

log = logging.getLogger(__name__)

# mod_auth_openidc's OIDCJWKSRefreshInterval default: an hour.
DEFAULT_MAX_AGE = 3600.0

_KTY_FOR_ALG_PREFIX = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def key_type_for(alg: str) -> str:
    """The JWK `kty` an asymmetric JWS algorithm needs (RFC 7518 §3, RFC 8037)."""
    return _KTY_FOR_ALG_PREFIX[alg[:2]]


class KeySet:
    def __init__(self, http: aiohttp.ClientSession, jwks_uri: Callable[[], str | None], *,
                 min_refresh_interval: float, clock: Callable[[], float],
                 max_age: float = DEFAULT_MAX_AGE) -> None:
        self._http = http
        self._jwks_uri = jwks_uri
        self._min_interval = min_refresh_interval
        self._max_age = max_age
        self._clock = clock
        self._keys: list[tuple[str | None, dict[str, Any], jwt.PyJWK]] = []
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts; gateway.web.observability exposes these as metrics
        self.failures = 0

    @property
    def loaded(self) -> bool:
        return self._fetched_at is not None

    @property
    def key_count(self) -> int:
        return len(self._keys)

    async def refresh(self, *, force: bool = False) -> bool:
        """Fetch the JWKS unless fetched within the minimum interval. True when a new set was stored."""
        async with self._lock:
            now = self._clock()
            if not force and self._fetched_at is not None and now - self._fetched_at < self._min_interval:
                return False
            uri = self._jwks_uri()
            if uri is None:
                raise ProviderUnavailable()
            self._fetched_at = now  # rate-limit failures as well as successes
            self.fetches += 1
            try:
                async with self._http.get(uri, allow_redirects=False) as resp:
                    if resp.status != 200:
                        raise ValueError(f"HTTP {resp.status}")
                    document = json.loads(await resp.read())
                self.load(document)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                self.failures += 1
                log.error("JWKS fetch from %s failed (%s); keeping %d cached key(s)",
                          uri, type(exc).__name__, len(self._keys))
                return False
            return True

    def load(self, document: Any) -> None:
        """Replace the cached keys with those of a JWK set document (ValueError when it is not one)."""
        self._keys = self._parse(document)
        if self._fetched_at is None:
            self._fetched_at = self._clock()

    @staticmethod
    def _parse(document: Any) -> list[tuple[str | None, dict[str, Any], jwt.PyJWK]]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("not a JWK set")
        parsed = []
        for jwk in document["keys"]:
            if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
                continue
            try:
                parsed.append((jwk.get("kid"), jwk, jwt.PyJWK(jwk)))
            except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
                log.warning("skipping a JWK that does not parse (kid %r)", jwk.get("kid"))
        return parsed

    def _find(self, kid: str | None, alg: str) -> Any | None:
        kty = key_type_for(alg)
        candidates = [
            pyjwk for k, jwk, pyjwk in self._keys
            if jwk.get("kty") == kty and jwk.get("alg") in (None, alg) and (kid is None or k == kid)
        ]
        # Without a kid the choice must be unambiguous (OIDC Core §10.1).
        if len(candidates) == 1 or (kid is not None and candidates):
            return candidates[0].key
        return None

    async def key_for(self, kid: str | None, alg: str) -> Any:
        """The public key for (kid, alg); one rate-limited re-fetch when unknown; else InvalidToken."""
        if self._fetched_at is not None and self._clock() - self._fetched_at >= self._max_age:
            with contextlib.suppress(ProviderUnavailable):  # no jwks_uri (yet): keep what we have
                await self.refresh()  # stale: the provider may have withdrawn a key; on failure the old set stays
        key = self._find(kid, alg)
        if key is None and await self.refresh():
            key = self._find(kid, alg)
        if key is None:
            raise InvalidToken("no matching signing key")
        return key
