"""OIDCClient: the Relying Party's calls to the OpenID Provider, and their value types.

Authorization request (OIDC Core §3.1.2.1) with fresh `state`, `nonce` and a PKCE S256 challenge
(RFC 7636); token exchange and refresh with client_secret_basic, client_secret_post or none
(RFC 6749 §2.3.1); userinfo, whose `sub` must equal the ID token's (OIDC Core §5.3.4); the
RP-initiated logout URL, refresh-token revocation (RFC 7009) and token introspection (RFC 7662).
Every ID token, from the token endpoint or (hybrid/implicit, form_post) from the authorization
response, is verified by TokenVerifier.
OP failures become ProviderError carrying the OAuth `error` code; an unreachable OP becomes
ProviderUnavailable. Tokens and codes are never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlencode

import aiohttp
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from yarl import URL

from gateway.config import OIDCSettings
from gateway.errors import InvalidToken, ProviderError, ProviderUnavailable
from gateway.oidc.metadata import ProviderState
from gateway.oidc.verify import Claims, TokenVerifier

__all__ = ["AuthRequest", "CodeResponse", "OIDCClient", "TokenSet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What one login attempt must remember between /oauth2/start and the callback."""

    state: str
    nonce: str
    code_verifier: str | None = field(repr=False)
    rd: str = "/"
    response_type: str = "code"


@dataclass(frozen=True, slots=True)
class TokenSet:
    access_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: float | None
    scope: str | None
    claims: Claims = field(default_factory=dict, repr=False)  # verified ID-token claims


@dataclass(frozen=True, slots=True)
class CodeResponse:
    """A token endpoint's answer to an authorization code: a Bearer access token, the rest unverified."""

    data: dict[str, Any] = field(repr=False)

    @property
    def access_token(self) -> str:
        token: str = self.data["access_token"]
        return token


class OIDCClient:
    def __init__(self, settings: OIDCSettings, provider: ProviderState, verifier: TokenVerifier,
                 http: aiohttp.ClientSession, *, redirect_uri: str,
                 clock: Callable[[], float]) -> None:
        self._settings = settings
        self._provider = provider
        self._verifier = verifier
        self._http = http
        self._redirect_uri = redirect_uri
        self._clock = clock
        self._secret = settings.client_secret.get_secret_value() if settings.client_secret else None

    def new_auth_request(self, rd: str) -> AuthRequest:
        # 256-bit state and nonce, a 384-bit PKCE verifier: 43 and 64 characters of base64url, which are
        # RFC 7636 §4.1 unreserved characters. One urandom read each (authlib's generate_token makes one
        # per character: 150 per login).
        return AuthRequest(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            # PKCE binds the code: no code (implicit), no verifier.
            code_verifier=secrets.token_urlsafe(48) if self._settings.pkce and "code" in self._settings.response_type
            else None,
            rd=rd,
            response_type=self._settings.response_type,
        )

    async def ensure_reachable(self) -> None:
        """ProviderUnavailable unless the OP answers (ProviderState.ensure_reachable): checked before a
        browser is sent there."""
        await self._provider.ensure_reachable()

    def reachability_known(self) -> bool:
        """True when ensure_reachable needs no request to the OP (its verdict is current)."""
        return self._provider.verdict_current()

    def authorization_url(self, req: AuthRequest) -> URL:
        metadata = self._provider.require()
        scopes = self._settings.scopes
        params: dict[str, str] = {
            "response_type": req.response_type,
            "client_id": self._settings.client_id,
            "redirect_uri": self._redirect_uri,
            "scope": " ".join(scopes),
            "state": req.state,
            "nonce": req.nonce,
        }
        if self._settings.response_mode == "form_post":
            params["response_mode"] = "form_post"
        if req.code_verifier is not None:
            params["code_challenge"] = create_s256_code_challenge(req.code_verifier)
            params["code_challenge_method"] = "S256"
        # Authing issues a refresh token only for offline_access with prompt=consent.
        if "offline_access" in scopes and self._settings.consent_for_offline_access:
            params["prompt"] = "consent"
        params.update(self._settings.extra_auth_params)
        return URL(metadata.authorization_endpoint).update_query(params)

    def _client_auth(self, form: dict[str, str]) -> dict[str, str]:
        method = self._settings.token_endpoint_auth_method
        if method == "client_secret_basic":
            # RFC 6749 §2.3.1: form-encode id and secret before Basic.
            pair = f"{quote_plus(self._settings.client_id)}:{quote_plus(self._secret or '')}"
            return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode("ascii")}
        form["client_id"] = self._settings.client_id
        if method == "client_secret_post":
            form["client_secret"] = self._secret or ""
        return {}

    async def _post(self, url: str, form: dict[str, str], *, endpoint: str) -> tuple[int, bytes]:
        """POST `form` to an OP endpoint with our client authentication; ProviderUnavailable when unreachable."""
        headers = {"Accept": "application/json", **self._client_auth(form)}
        # The body aiohttp would make of the dict (FormData: urlencode, this Content-Type), encoded here:
        # its FormData path costs ~40 us of CPU per request, ahead of the token request of every login.
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            async with self._http.post(url, data=urlencode(form).encode(), headers=headers,
                                       allow_redirects=False) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("%s endpoint unreachable: %s", endpoint, type(exc).__name__)
            raise ProviderUnavailable() from exc
        if resp.status < 500:
            self._provider.answered()  # the next login start need not probe the OP
        return resp.status, body

    async def _token_request(self, form: dict[str, str]) -> dict[str, Any]:
        status, body = await self._post(self._provider.require().token_endpoint, form, endpoint="token")
        data = _json_object(body)
        if status != 200:
            error = data.get("error") if data and isinstance(data.get("error"), str) else "server_error"
            description = data.get("error_description") if data else None
            log.warning("token endpoint answered HTTP %d error=%s", status, error)
            raise ProviderError("The identity provider refused the token request.", error=error,
                                description=description if isinstance(description, str) else None)
        if data is None or not isinstance(data.get("access_token"), str):
            raise ProviderError("The identity provider sent an invalid token response.",
                                error="invalid_response")
        token_type = data.get("token_type")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise ProviderError("The identity provider sent an unsupported token type.",
                                error="invalid_response")
        return data

    def _token_set(self, data: dict[str, Any], claims: Claims, *, previous_refresh: str | None = None) -> TokenSet:
        expires_in = data.get("expires_in")
        expires_at = None
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            expires_at = self._clock() + float(expires_in)
        refresh = data.get("refresh_token")
        return TokenSet(
            access_token=data["access_token"],
            id_token=data.get("id_token") if isinstance(data.get("id_token"), str) else None,
            refresh_token=refresh if isinstance(refresh, str) else previous_refresh,
            expires_at=expires_at,
            scope=data.get("scope") if isinstance(data.get("scope"), str) else None,
            claims=claims,
        )

    async def exchange_code(self, code: str, req: AuthRequest) -> TokenSet:
        """Authorization code → tokens; the ID token is verified against this login's nonce."""
        return await self.verify_code_response(await self.redeem_code(code, req), req)

    async def redeem_code(self, code: str, req: AuthRequest) -> CodeResponse:
        """The token endpoint's answer to the code (first half of exchange_code): nothing verified yet."""
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self._redirect_uri}
        if req.code_verifier is not None:
            form["code_verifier"] = req.code_verifier
        return CodeResponse(await self._token_request(form))

    async def verify_code_response(self, response: CodeResponse, req: AuthRequest) -> TokenSet:
        """The tokens, once the ID token verified against this login's nonce (second half of exchange_code)."""
        data = response.data
        id_token = data.get("id_token")
        if not isinstance(id_token, str):
            raise InvalidToken("the token response has no id_token")
        claims = await self._verifier.id_token(id_token, nonce=req.nonce, access_token=data["access_token"])
        return self._token_set(data, claims)

    async def front_channel_id_token(self, raw: str, req: AuthRequest, *, code: str | None) -> Claims:
        """An ID token from the authorization response (hybrid/implicit, OIDC Core §3.3.2.11, §3.2.2.11).

        The nonce is always required; in the hybrid flow `c_hash` must be present and match the code.
        """
        return await self._verifier.id_token(raw, nonce=req.nonce, code=code,
                                             require_c_hash="code" in req.response_type.split())

    def implicit_token_set(self, raw: str, claims: Claims) -> TokenSet:
        """The implicit `id_token` flow yields an identity only: no access or refresh token."""
        return TokenSet(access_token=None, id_token=raw, refresh_token=None, expires_at=None, scope=None,
                        claims=claims)

    async def refresh(self, refresh_token: str) -> TokenSet:
        """grant_type=refresh_token; keeps the old refresh token when the OP does not rotate it."""
        data = await self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})
        claims: Claims = {}
        if isinstance(data.get("id_token"), str):
            # OIDC Core §12.2: a refreshed ID token carries no nonce obligation.
            claims = await self._verifier.id_token(data["id_token"], nonce=None,
                                                   access_token=data["access_token"])
        return self._token_set(data, claims, previous_refresh=refresh_token)

    async def userinfo(self, access_token: str, *, expected_sub: str | Awaitable[str]) -> Claims:
        """The userinfo response, once its `sub` equals `expected_sub` (OIDC Core §5.3.4). An awaitable
        `expected_sub` (the ID token still being verified) is awaited only after the response is in: the
        request goes out at once, and the OP works on it meanwhile."""
        metadata = self._provider.require()
        if metadata.userinfo_endpoint is None:
            return {}
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        try:
            async with self._http.get(metadata.userinfo_endpoint, headers=headers,
                                      allow_redirects=False) as resp:
                body = await resp.read()
                status = resp.status
                content_type = resp.content_type
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("userinfo endpoint unreachable: %s", type(exc).__name__)
            raise ProviderUnavailable() from exc
        if status < 500:
            self._provider.answered()
        if status != 200:
            raise ProviderError("The identity provider refused the userinfo request.", error="userinfo_failed")
        if content_type == "application/jwt":
            raise ProviderError("Signed userinfo responses are not supported.", error="invalid_response")
        data = _json_object(body)
        if data is None:
            raise ProviderError("The identity provider sent an invalid userinfo response.",
                                error="invalid_response")
        if not isinstance(expected_sub, str):
            expected_sub = await expected_sub
        if data.get("sub") != expected_sub:
            raise InvalidToken("userinfo subject mismatch")  # OIDC Core §5.3.4
        return data

    async def revoke(self, token: str, *, token_type_hint: str = "refresh_token") -> bool:  # noqa: S107
        """RFC 7009 revocation at the OP's revocation_endpoint; best effort, False when it did not happen."""
        metadata = self._provider.metadata
        if metadata is None or metadata.revocation_endpoint is None:
            return False
        form = {"token": token, "token_type_hint": token_type_hint}
        try:
            status, _ = await self._post(metadata.revocation_endpoint, form, endpoint="revocation")
        except ProviderUnavailable:
            return False
        if status != 200:  # RFC 7009 §2.2: 200 also for tokens already invalid
            log.warning("token revocation refused: HTTP %d", status)
        return status == 200

    async def introspect(self, token: str) -> Claims | None:
        """RFC 7662 §2: the OP's verdict on an opaque token; the response when active, else None.

        Raises ProviderUnavailable when the OP cannot say (unreachable, no endpoint, not a JSON object):
        that is our outage, not the client's bad token, and it is never cached as a negative result.
        """
        metadata = self._provider.require()
        if metadata.introspection_endpoint is None:
            log.error("bearer introspection is on but the provider has no introspection_endpoint")
            raise ProviderUnavailable()
        form = {"token": token, "token_type_hint": "access_token"}
        status, body = await self._post(metadata.introspection_endpoint, form, endpoint="introspection")
        data = _json_object(body)
        if status != 200 or data is None:
            log.error("introspection endpoint answered HTTP %d", status)
            raise ProviderUnavailable()
        return data if data.get("active") is True else None  # RFC 7662 §2.2: only a JSON true is active

    def end_session_url(self, *, id_token: str | None, post_logout_redirect: str, state: str) -> URL | None:
        metadata = self._provider.metadata
        if metadata is None or metadata.end_session_endpoint is None:
            return None
        params = {"post_logout_redirect_uri": post_logout_redirect, "state": state,
                  "client_id": self._settings.client_id}
        if id_token:
            params["id_token_hint"] = id_token
        return URL(metadata.end_session_endpoint).update_query(params)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
