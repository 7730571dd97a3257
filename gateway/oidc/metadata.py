"""OpenID Provider metadata: discovery (OpenID Connect Discovery 1.0 §4) and endpoint overrides.

Trusts: the document at `{issuer}/.well-known/openid-configuration` fetched over the configured
issuer URL. Rejects: a document whose `issuer` is not exactly the configured issuer (Discovery §4.3),
one that is not a JSON object, or one missing an endpoint the gateway needs. Endpoint URLs set in
config override the discovered ones (older Authing apps publish wrong or no discovery).

`ProviderState` loads the metadata in the background and keeps retrying until it succeeds; until
then `require()` raises ProviderUnavailable so logins get a clear 503 and /readyz stays unready.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from gateway.config import OIDCSettings
from gateway.errors import ProviderUnavailable

__all__ = ["ProviderMetadata", "ProviderState", "fetch_metadata", "metadata_from"]

log = logging.getLogger(__name__)

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
    url = settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
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


class ProviderState:
    """Holds the provider metadata; a background task loads it and retries until it succeeds."""

    def __init__(self, http: aiohttp.ClientSession, settings: OIDCSettings) -> None:
        self._http = http
        self._settings = settings
        self.metadata: ProviderMetadata | None = None
        self.last_error: str | None = "not loaded yet"
        self._loaded = asyncio.Event()

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
        self._loaded.set()
        log.info("OpenID Provider metadata loaded for issuer %s", self.metadata.issuer)
        return True

    async def run(self) -> None:
        """Load, retrying at the configured interval (with a little backoff) until loaded."""
        delay = self._settings.discovery_retry_interval
        while not await self.load_once():
            await asyncio.sleep(delay)
            delay = min(delay * 2, max(self._settings.discovery_retry_interval, 60.0))
