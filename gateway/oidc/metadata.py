"""OpenID Provider metadata: discovery (OpenID Connect Discovery 1.0 §4) and endpoint overrides.

Trusts: the document at `{issuer}/.well-known/openid-configuration` fetched over the configured
issuer URL. Rejects: a document whose `issuer` is not exactly the configured issuer (Discovery §4.3),
one that is not a JSON object, or one missing an endpoint the gateway needs. Endpoint URLs set in
config override the discovered ones (older Authing apps publish wrong or no discovery).

`ProviderState` loads the metadata in the background and keeps retrying until it succeeds; until
then `require()` raises ProviderUnavailable so logins get a clear 503 and /readyz stays unready.
Once loaded, the metadata is kept for good: an OP outage later does not take it away (sessions and
Bearer JWTs go on with the cached metadata and keys). A new login asks `ensure_reachable()` first: a
cheap GET of the discovery document (any answer below 500 counts), its verdict reused for
PROBE_INTERVAL, so a browser gets the 503 page instead of being sent to an OP that does not answer.
An answer below 500 from any other OP endpoint (`answered()`: token, userinfo, ...) is the same
evidence, so while logins keep coming none of them waits for a probe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.config import OIDCSettings
from gateway.errors import ProviderUnavailable

__all__ = ["PROBE_INTERVAL", "ProviderMetadata", "ProviderState", "fetch_metadata", "metadata_from"]

log = logging.getLogger(__name__)

# A reachability verdict is reused this long (seconds): a flood of login starts costs the OP at most one
# probe per interval and process; an outage is noticed, and a recovery seen, within one interval.
PROBE_INTERVAL = 1.0
PROBE_TIMEOUT = 3.0  # at most; oidc.http_timeout when shorter

_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
              "end_session_endpoint", "revocation_endpoint", "introspection_endpoint")


@dataclass(frozen=True, slots=True)
class ProviderMetadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None = None
    userinfo_endpoint: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


class DiscoveryError(Exception):
    """Discovery failed; the message is safe to log (no secrets) and says how to fix it."""


def metadata_from(settings: OIDCSettings, document: Mapping[str, Any]) -> ProviderMetadata:
    """Merge a discovery document (possibly empty) with the endpoint overrides from config."""
    merged: dict[str, Any] = {k: document.get(k) for k in _ENDPOINTS}
    for key in _ENDPOINTS:
        override = getattr(settings, key)
        if override is not None:
            merged[key] = override
    for key, value in merged.items():
        if value is not None and not (isinstance(value, str) and value.startswith(("https://", "http://"))):
            raise DiscoveryError(f"{key} in the discovery document is not a URL")
    missing = [k for k in ("authorization_endpoint", "token_endpoint") if not merged[k]]
    if not merged["jwks_uri"] and not all(a.startswith("HS") for a in settings.id_token_signing_algs):
        missing.append("jwks_uri")
    if missing:
        raise DiscoveryError(f"the provider publishes no {', '.join(missing)}; set oidc.{missing[0]} in config")
    return ProviderMetadata(issuer=settings.issuer, raw=dict(document), **merged)


async def fetch_metadata(http: aiohttp.ClientSession, settings: OIDCSettings) -> ProviderMetadata:
    if not settings.discovery:
        return metadata_from(settings, {})
    url = _discovery_url(settings)
    try:
        async with http.get(url, allow_redirects=False) as resp:
            if resp.status != 200:
                raise DiscoveryError(f"GET {url} answered HTTP {resp.status}")
            document = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise DiscoveryError(f"GET {url} failed: {type(exc).__name__}") from exc
    except ValueError as exc:
        raise DiscoveryError(f"GET {url} did not return JSON") from exc
    if not isinstance(document, dict):
        raise DiscoveryError(f"GET {url} did not return a JSON object")
    if document.get("issuer") != settings.issuer:
        # Discovery §4.3: the issuer MUST be identical to the one used for discovery.
        raise DiscoveryError(
            f"issuer mismatch: configured {settings.issuer!r}, the provider says "
            f"{document.get('issuer')!r}; set oidc.issuer to exactly the provider's value"
        )
    return metadata_from(settings, document)


def _discovery_url(settings: OIDCSettings) -> str:
    return settings.issuer.rstrip("/") + "/.well-known/openid-configuration"


class ProviderState:
    """Holds the provider metadata; a background task loads it and retries until it succeeds."""

    def __init__(self, http: aiohttp.ClientSession, settings: OIDCSettings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = http
        self._settings = settings
        self._clock = clock
        self.metadata: ProviderMetadata | None = None
        self.last_error: str | None = "not loaded yet"
        self._loaded = asyncio.Event()
        self._probe_lock = asyncio.Lock()
        self._probed_at: float | None = None
        self._reachable = True

    def require(self) -> ProviderMetadata:
        if self.metadata is None:
            raise ProviderUnavailable()
        return self.metadata

    async def wait_loaded(self) -> ProviderMetadata:
        await self._loaded.wait()
        return self.require()

    async def load_once(self) -> bool:
        try:
            self.metadata = await fetch_metadata(self._http, self._settings)
        except DiscoveryError as exc:
            self.last_error = str(exc)
            log.error("OpenID Provider discovery failed: %s", exc)
            return False
        self.last_error = None
        self._note(True)  # the OP just answered: a verdict from before it did is void
        self._probed_at = self._clock()
        self._loaded.set()
        log.info("OpenID Provider metadata loaded for issuer %s", self.metadata.issuer)
        return True

    async def ensure_reachable(self) -> ProviderMetadata:
        """The metadata when the OP answers now (verdict reused for PROBE_INTERVAL); else ProviderUnavailable.

        Not loaded yet (the OP was down at start-up): one load attempt per interval here as well, so the
        first login after the OP returns need not wait for the background retry's backoff."""
        if self._stale():
            async with self._probe_lock:  # one probe at a time; the others reuse its verdict
                if self._stale():
                    if self.metadata is None:
                        self._reachable = await self.load_once()
                    else:
                        self._note(await self._probe(self.metadata))
                    self._probed_at = self._clock()
        if not self._reachable:
            raise ProviderUnavailable()
        return self.require()

    def verdict_current(self) -> bool:
        """True when ensure_reachable would answer from its current verdict, without asking the OP."""
        return self.metadata is not None and not self._stale()

    def answered(self) -> None:
        """An OP endpoint just answered (below 500): as good as a probe, the verdict is renewed."""
        if self.metadata is not None:
            self._note(True)
            self._probed_at = self._clock()

    def _stale(self) -> bool:
        return self._probed_at is None or self._clock() - self._probed_at >= PROBE_INTERVAL

    async def _probe(self, metadata: ProviderMetadata) -> bool:
        # Without discovery, the authorization endpoint stands in: an error page is an answer too.
        url = _discovery_url(self._settings) if self._settings.discovery else metadata.authorization_endpoint
        timeout = aiohttp.ClientTimeout(total=min(self._settings.http_timeout, PROBE_TIMEOUT))
        try:
            async with self._http.get(url, allow_redirects=False, timeout=timeout) as resp:
                if resp.status < 500:
                    return True
                reason = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = type(exc).__name__
        if self._reachable:
            log.error("OpenID Provider unreachable (%s at %s): new logins get 503 provider_unavailable; "
                      "sessions and Bearer JWTs go on with the cached metadata and keys", reason, url)
        return False

    def _note(self, reachable: bool) -> None:
        if reachable and not self._reachable:
            log.info("OpenID Provider reachable again: logins resume")
        self._reachable = reachable

    async def run(self) -> None:
        """Load, retrying at the configured interval (with a little backoff) until loaded."""
        delay = self._settings.discovery_retry_interval
        while not await self.load_once():
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(self._settings.discovery_retry_interval, 60.0))
