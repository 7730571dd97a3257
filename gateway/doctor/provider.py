"""The OpenID Provider checks: discovery, capabilities, JWKS, clock, client credentials, redirect_uri.

The requests are the gateway's own: the authorization URL and the token request are built by the
gateway's OIDCClient, so a mismatch doctor finds is one a real login would hit. The token endpoint
gets an invented code: an OP that authenticated the client answers `invalid_grant`, one that did
not answers `invalid_client`. The authorization endpoint is asked without following redirects: an
OP that accepts client_id and redirect_uri sends its login page (or a redirect to it); one that
does not shows an error page, or redirects back with an `error`.
"""

from __future__ import annotations

import email.utils
import json
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

from gateway.config import Settings
from gateway.doctor.findings import Finding, fail, info, ok, safe_url, warn
from gateway.errors import ProviderError, ProviderUnavailable
from gateway.oidc.client import OIDCClient
from gateway.oidc.jwks import KeySet, key_type_for
from gateway.oidc.metadata import DiscoveryError, ProviderMetadata, ProviderState, metadata_from
from gateway.oidc.verify import TokenVerifier

__all__ = ["check_provider"]

Clock = Callable[[], float]
_NTP_FIX = "synchronise this host's clock with NTP (chrony, systemd-timesyncd) or widen oidc.clock_skew"
_WARN_SKEW = 2.5  # seconds: the Date header has one-second resolution, plus the round trip


class _Probe:
    """GETs and POSTs to the OP that remember the first `Date` header (and when it arrived)."""

    def __init__(self, http: aiohttp.ClientSession, clock: Clock) -> None:
        self.http = http
        self.clock = clock
        self.date: tuple[float, float, str] | None = None  # (OP time, local time, where)

    async def get(self, url: str) -> tuple[int, bytes]:
        async with self.http.get(url, allow_redirects=False) as resp:
            body = await resp.read()
            self.note_date(resp, url)
            return resp.status, body

    def note_date(self, resp: aiohttp.ClientResponse, url: str) -> None:
        header = resp.headers.get("Date")
        if self.date is None and header:
            try:
                self.date = (email.utils.parsedate_to_datetime(header).timestamp(), self.clock(), url)
            except (TypeError, ValueError):
                pass


async def _discovery(probe: _Probe, settings: Settings) -> tuple[list[Finding], dict[str, Any] | None]:
    issuer = settings.oidc.issuer
    if not settings.oidc.discovery:
        return [info("discovery", "discovery is off: endpoints come from the config, the OP's capabilities "
                                  "are not checked")], {}
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        status, body = await probe.get(url)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [fail("discovery", f"GET {safe_url(url)} failed: {type(exc).__name__}",
                     "check oidc.issuer, DNS and that this host may reach the OP over HTTPS "
                     "(HTTP(S)_PROXY is not used)")], None
    if status != 200:
        return [fail("discovery", f"GET {safe_url(url)} answered HTTP {status}",
                     "oidc.issuer must be the OP's issuer identifier, the URL before "
                     "/.well-known/openid-configuration (Authing: https://<app>.authing.cn/oidc)")], None
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        return [fail("discovery", f"GET {safe_url(url)} did not return a JSON object",
                     "oidc.issuer must point at the OP, not at a web page in front of it")], None
    if document.get("issuer") != issuer:
        return [fail("issuer", f"the OP says its issuer is {document.get('issuer')!r}, the config says {issuer!r}",
                     f"set oidc.issuer to exactly {document.get('issuer')!r} (the match is exact, "
                     "trailing slash included)")], None
    return [ok("discovery", f"{safe_url(url)} answered and its issuer matches exactly")], document


def _offered(settings: Settings, document: dict[str, Any]) -> list[Finding]:
    oidc = settings.oidc
    findings = []
    algs = document.get("id_token_signing_alg_values_supported")
    if isinstance(algs, list):
        common = [a for a in oidc.id_token_signing_algs if a in algs]
        if not common:
            findings.append(fail("algorithms", f"the OP signs ID tokens with {', '.join(map(str, algs))}; "
                                               f"none is in oidc.id_token_signing_algs "
                                               f"({', '.join(oidc.id_token_signing_algs)})",
                                 "set oidc.id_token_signing_algs to the algorithm your client is registered with "
                                 "at the OP (Authing's default is HS256)"))
        else:
            findings.append(ok("algorithms", f"the OP offers {', '.join(common)} for ID tokens"))
    methods = document.get("token_endpoint_auth_methods_supported", ["client_secret_basic"])  # Discovery §3
    method = oidc.token_endpoint_auth_method
    if isinstance(methods, list) and method not in methods:
        findings.append(fail("client auth", f"the OP does not offer token_endpoint_auth_method {method} "
                                            f"(it offers {', '.join(map(str, methods))})",
                             "set oidc.token_endpoint_auth_method to the method your client is registered "
                             "with, one of those"))
    else:
        findings.append(ok("client auth", f"the OP offers {method}"))
    findings += _flow_support(settings, document)
    return findings


def _flow_support(settings: Settings, document: dict[str, Any]) -> list[Finding]:
    oidc, findings = settings.oidc, []
    types = document.get("response_types_supported")
    if isinstance(types, list) and not any(set(str(t).split()) == set(oidc.response_type.split()) for t in types):
        findings.append(fail("response type", f"the OP does not offer response_type {oidc.response_type!r}",
                             "set oidc.response_type: code (every certified OP offers it)"))
    modes = document.get("response_modes_supported", ["query", "fragment"])  # Discovery §3 default
    if oidc.response_mode == "form_post" and isinstance(modes, list) and "form_post" not in modes:
        findings.append(fail("response mode", "the OP does not offer response_mode form_post",
                             "set oidc.response_mode: query and oidc.response_type: code"))
    challenges = document.get("code_challenge_methods_supported")
    if oidc.pkce and isinstance(challenges, list) and "S256" not in challenges:
        findings.append(warn("pkce", "the OP does not list PKCE S256 (code_challenge_methods_supported)",
                             "if logins fail with invalid_request, set oidc.pkce: false (confidential clients "
                             "only)"))
    scopes = document.get("scopes_supported")
    if isinstance(scopes, list):
        missing = [s for s in oidc.scopes if s not in scopes]
        if missing:
            findings.append(warn("scopes", f"the OP does not list scope(s) {', '.join(missing)}",
                                 "remove them from oidc.scopes unless your OP documents them"))
    return findings


async def _jwks(probe: _Probe, settings: Settings, metadata: ProviderMetadata) -> list[Finding]:
    asymmetric = [a for a in settings.oidc.id_token_signing_algs if not a.startswith("HS")]
    if settings.access.bearer.enabled:
        asymmetric += [a for a in settings.access.bearer.algorithms if a not in asymmetric]
    if not asymmetric:
        return [info("jwks", "only HS* algorithms: ID tokens verify with the client_secret, no JWKS needed")]
    if metadata.jwks_uri is None:
        return [fail("jwks", "the OP publishes no jwks_uri", "set oidc.jwks_uri")]
    where = safe_url(metadata.jwks_uri)
    try:
        status, body = await probe.get(metadata.jwks_uri)
        document = json.loads(body) if status == 200 else None
        keys = document.get("keys") if isinstance(document, dict) else None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return [fail("jwks", f"GET {where} failed: {type(exc).__name__}", "check that this host may reach jwks_uri")]
    if not isinstance(keys, list):
        return [fail("jwks", f"GET {where} did not return a JWK set (HTTP {status})",
                     "check oidc.jwks_uri, or the OP's jwks_uri in discovery")]
    signing = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
    findings = []
    for alg in asymmetric:
        usable = [k for k in signing if k.get("kty") == key_type_for(alg) and k.get("alg") in (None, alg)]
        id_token_alg = alg in settings.oidc.id_token_signing_algs
        if usable:
            kids = ", ".join(str(k.get("kid", "?")) for k in usable)
            findings.append(ok("jwks", f"{where} has {len(usable)} key(s) for {alg} (kid {kids})"))
        elif id_token_alg:
            findings.append(fail("jwks", f"{where} has no key for {alg}: ID tokens signed with it cannot verify",
                                 f"remove {alg} from oidc.id_token_signing_algs or have the OP publish a "
                                 f"{key_type_for(alg)} key"))
        else:
            findings.append(info("jwks", f"no key for {alg}: bearer tokens signed with it would be refused"))
    return findings


def _clock(probe: _Probe, settings: Settings) -> Finding:
    if probe.date is None:
        return warn("clock", "the OP sent no Date header: clock skew not checked",
                    "make sure this host's clock is synchronised (NTP)")
    op_time, local, where = probe.date
    skew = local - op_time
    allowed = settings.oidc.clock_skew
    text = f"this host's clock is {abs(skew):.0f}s {'ahead of' if skew > 0 else 'behind'} the OP's ({safe_url(where)})"
    if abs(skew) > allowed:
        return fail("clock", f"{text}: more than oidc.clock_skew ({allowed:g}s), tokens would be refused", _NTP_FIX)
    if abs(skew) > _WARN_SKEW:
        return warn("clock", f"{text}; oidc.clock_skew allows {allowed:g}s", _NTP_FIX)
    return ok("clock", f"within {_WARN_SKEW:g}s of the OP's Date header (oidc.clock_skew allows {allowed:g}s)")


def _client(probe: _Probe, settings: Settings, metadata: ProviderMetadata) -> OIDCClient:
    """The gateway's own OIDCClient (nothing it builds touches the network until asked)."""
    state = ProviderState(probe.http, settings.oidc)
    state.metadata = metadata
    keys = KeySet(probe.http, lambda: metadata.jwks_uri, min_refresh_interval=60.0, clock=probe.clock)
    secret = settings.oidc.client_secret.get_secret_value() if settings.oidc.client_secret else None
    verifier = TokenVerifier(issuer=settings.oidc.issuer, client_id=settings.oidc.client_id, client_secret=secret,
                             id_token_algs=settings.oidc.id_token_signing_algs, bearer_algs=[], bearer_audiences=[],
                             keys=keys, clock_skew=settings.oidc.clock_skew, clock=probe.clock)
    return OIDCClient(settings.oidc, state, verifier, probe.http, redirect_uri=settings.redirect_uri,
                      clock=probe.clock)


async def _credentials(client: OIDCClient, settings: Settings) -> Finding:
    if "code" not in settings.oidc.response_type:
        return info("client credentials", "implicit flow: the token endpoint is not used")
    method = settings.oidc.token_endpoint_auth_method
    try:
        await client.exchange_code(f"doctor-{secrets.token_urlsafe(16)}", client.new_auth_request("/"))
    except ProviderUnavailable:
        return fail("client credentials", "the token endpoint did not answer",
                    "check that this host may reach the OP's token_endpoint")
    except ProviderError as exc:
        if exc.error == "invalid_grant":
            return ok("client credentials", f"the token endpoint accepted client {settings.oidc.client_id!r} "
                                            f"with {method} (an invented code got invalid_grant)")
        if exc.error in ("invalid_client", "unauthorized_client"):
            return fail("client credentials", f"the token endpoint refused client {settings.oidc.client_id!r} "
                                              f"({exc.error})",
                        "check oidc.client_id, oidc.client_secret (or client_secret_file) and that "
                        f"token_endpoint_auth_method {method} is the one the client is registered with")
        return warn("client credentials", f"the token endpoint answered error={exc.error}: inconclusive",
                    "try a login; the gateway's log names the OP's error")
    except Exception as exc:  # noqa: BLE001 - an OP that returned tokens for an invented code is odd, not fatal
        return warn("client credentials", f"unexpected answer to an invented code ({type(exc).__name__})",
                    "try a login and read the gateway's log")
    return warn("client credentials", "the token endpoint accepted an invented code", "check the OP")


async def _redirect_uri(client: OIDCClient, probe: _Probe, settings: Settings) -> list[Finding]:
    redirect_uri = settings.redirect_uri
    findings = [info("redirect_uri", f"the gateway sends redirect_uri={redirect_uri}; register exactly this "
                                     "at the OP (Authing: Login callback URL)")]
    url = client.authorization_url(client.new_auth_request("/"))
    register = (f"register {redirect_uri} as a redirect URI (login callback URL) of client "
                f"{settings.oidc.client_id!r} at the OP, or fix public_url")
    try:
        async with probe.http.get(url, allow_redirects=False) as resp:
            status, location = resp.status, resp.headers.get("Location")
            probe.note_date(resp, str(url))
            body = (await resp.content.read(64 * 1024)).decode("utf-8", "replace")
    except (aiohttp.ClientError, TimeoutError) as exc:
        return [*findings, fail("authorization", f"the authorization endpoint did not answer ({type(exc).__name__})",
                                "check that browsers and this host may reach the OP's authorization_endpoint")]
    target = URL(location) if location else None
    if target is not None and str(target).startswith(redirect_uri):
        error = target.query.get("error")
        if error:
            return [*findings, fail("authorization", f"the OP sent the browser back with error={error}",
                                    _AUTHORIZE_FIXES.get(error, "read error_description at the OP and fix the "
                                                                "client's registration"))]
    if status < 400:
        return [*findings, ok("authorization", f"the OP accepted client {settings.oidc.client_id!r} with this "
                                               f"redirect_uri (HTTP {status}: its login page)")]
    if "redirect_uri" in body:
        return [*findings, fail("authorization", f"the OP refused redirect_uri {redirect_uri} (HTTP {status})",
                                register)]
    return [*findings, fail("authorization", f"the OP refused the authorization request (HTTP {status})",
                            f"check oidc.client_id, then {register}")]


_AUTHORIZE_FIXES = {
    "invalid_scope": "remove the scopes the OP does not grant this client from oidc.scopes",
    "unauthorized_client": "allow the authorization code grant (and the configured response_type) for the client",
    "unsupported_response_type": "set oidc.response_type to one the client is registered for (code)",
    "invalid_request": "compare oidc.extra_auth_params and oidc.pkce with what the OP requires",
    "consent_required": "grant consent at the OP, or remove prompt from oidc.extra_auth_params",
}


async def check_provider(http: aiohttp.ClientSession, settings: Settings, *, clock: Clock) -> list[Finding]:
    probe = _Probe(http, clock)
    findings, document = await _discovery(probe, settings)
    if document is None:
        return [*findings, info("redirect_uri", f"the gateway sends redirect_uri={settings.redirect_uri}")]
    try:
        metadata = metadata_from(settings.oidc, document)
    except DiscoveryError as exc:
        return [*findings, fail("endpoints", str(exc), "set the missing endpoint under oidc in the config")]
    if settings.oidc.discovery:
        findings += _offered(settings, document)
    findings += await _jwks(probe, settings, metadata)
    client = _client(probe, settings, metadata)
    findings.append(await _credentials(client, settings))
    findings += await _redirect_uri(client, probe, settings)
    findings.append(_clock(probe, settings))
    if metadata.end_session_endpoint is None:
        findings.append(info("sign-out", "the OP has no end_session_endpoint: sign-out ends the local session only"))
    return findings
