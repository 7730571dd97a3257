"""The browser login flow: /oauth2/start, /oauth2/callback (GET and POST), /oauth2/sign_out.

Trusts: a callback only when its `state` names a pending login in the store (single-use: consumed
on first sight, 10-minute TTL) that was started by this very browser (the login-binding cookie's
hash is stored with the state), when `iss`, if sent, is our issuer (RFC 9207), and when the code
exchange returns an ID token that verifies with this login's nonce. Rejects everything else with a
LoginError page (400): unknown, reused or foreign state, an OP error response, a bad ID token, a
userinfo `sub` that differs (an unknown or spent state is LoginExpired, the OP's access_denied
LoginCancelled). The userinfo request is sent before the ID token is verified, so the OP answers it
meanwhile; its claims are used only once the ID token verified. Each successful login gets a fresh
session id (no fixation) and the previous session, if any, is deleted. Return paths go through
safe_return_path (no open redirects). A login that carries a preserved form POST ends with a page
that re-POSTs it to the return path (rendered by the web layer's `replay_post`) instead of a redirect.

A login starts only when the OP answers (OIDCClient.ensure_reachable); otherwise the answer is 503
provider_unavailable (a page for a browser), not a redirect to an OP that is down.

Sign-out lands on `rd` when given, else on SIGNED_OUT_PATH: a page, never a redirect, since the
application's `/` would send a signed-out browser straight back to the OP (a login loop).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Sequence

from aiohttp import web
from multidict import MultiDictProxy

from gateway.auth.cookie_session import SessionAuthenticator
from gateway.auth.preserve import Form
from gateway.auth.redirect import safe_return_path
from gateway.config import Settings
from gateway.errors import InvalidToken, LoginCancelled, LoginError, LoginExpired, ProviderError, ProviderUnavailable
from gateway.oidc.client import CodeResponse, OIDCClient, TokenSet
from gateway.oidc.verify import Claims
from gateway.session.cookie import SignedCookie
from gateway.session.model import PendingLogin, Session
from gateway.session.store import SessionStore

__all__ = ["SIGNED_OUT_PATH", "SIGN_OUT_PATH", "START_PATH", "LoginFlow", "ReplayPost"]

log = logging.getLogger(__name__)

START_PATH = "/oauth2/start"
SIGN_OUT_PATH = "/oauth2/sign_out"
SIGNED_OUT_PATH = "/oauth2/signed_out"

# (request, same-origin path, fields) → the page that POSTs the fields there (gateway.web.pages).
ReplayPost = Callable[[web.Request, str, Sequence[tuple[str, str]]], web.StreamResponse]

_OAUTH_ERROR_CODE = re.compile(r"^[a-z_]{1,64}$")


def _binding_hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class LoginFlow:
    def __init__(self, settings: Settings, client: OIDCClient, store: SessionStore,
                 sessions: SessionAuthenticator, session_cookie: SignedCookie, login_cookie: SignedCookie, *,
                 clock: Callable[[], float], on_login: Callable[[str, str], None] | None = None,
                 replay_post: ReplayPost | None = None) -> None:
        self._settings = settings
        self._client = client
        self._store = store
        self._sessions = sessions
        self._session_cookie = session_cookie
        self._login_cookie = login_cookie
        self._clock = clock
        self._on_login = on_login or (lambda outcome, reason: None)
        self._replay_post = replay_post

    async def begin(self, request: web.Request, rd: str, form: Form | None = None) -> web.StreamResponse:
        """Remember a new login (state, nonce, PKCE verifier, return path, preserved form) and send the
        browser to the OP."""
        domains = self._settings.access.redirect_domains  # absolute rd only to these hosts (forward-auth)
        auth_request = self._client.new_auth_request(safe_return_path(rd, domains))
        binding = self._login_cookie.read(request) or self._login_cookie.new_id()
        pending = PendingLogin(request=auth_request, binding=_binding_hash(binding), created_at=self._clock(),
                               form=form if self._replay_post is not None else None)
        await self._remember(auth_request.state, pending)
        location = self._client.authorization_url(auth_request)
        # 303 after a POST: the browser follows with a GET (RFC 9110 §15.4.4).
        status = 303 if request.method == "POST" else 302
        response = web.Response(status=status, headers={"Location": str(location), "Cache-Control": "no-store"})
        self._login_cookie.set(response, binding)
        return response

    async def _remember(self, state: str, pending: PendingLogin) -> None:
        """Store the pending login, once the OP is known to answer: an OP that does not gets the browser a
        503 page, not a redirect into a dead end. When that takes a probe (the verdict is older than
        PROBE_INTERVAL: every login of a quiet gateway), the probe and the store write run at once, so the
        start waits for the slower of the two round trips, not for their sum. The OP's verdict still comes
        first: an OP that is down answers provider_unavailable even when the store failed too (its
        pending login, if written, is never used and expires with login_timeout)."""
        ttl = self._settings.session.login_timeout
        if self._client.reachability_known():
            await self._client.ensure_reachable()  # no request: raises at once while the OP is known down
            await self._store.put_login(state, pending, ttl=ttl)
            return
        probe = asyncio.ensure_future(self._client.ensure_reachable())
        try:
            await self._store.put_login(state, pending, ttl=ttl)
        except Exception:
            await probe  # ProviderUnavailable, when the OP is down too, before the store's error
            raise
        except BaseException:
            probe.cancel()
            raise
        await probe

    async def start(self, request: web.Request) -> web.StreamResponse:
        return await self.begin(request, request.query.get("rd", "/"))

    async def callback(self, request: web.Request) -> web.StreamResponse:
        params: MultiDictProxy[str] | MultiDictProxy[str | bytes | web.FileField]
        params = await request.post() if request.method == "POST" else request.query
        try:
            return await self._complete(request, params)
        except LoginError as exc:
            self._on_login("failure", exc.detail)
            raise
        except InvalidToken as exc:
            self._on_login("failure", "invalid_id_token")
            log.warning("login rejected: ID token invalid (%s)", exc.detail)
            raise LoginError("The identity provider's response could not be verified.") from None

    async def _complete(self, request: web.Request,
                        params: MultiDictProxy[str] | MultiDictProxy[str | bytes | web.FileField]
                        ) -> web.StreamResponse:
        state = _single(params, "state")
        if state is None:
            raise LoginError("The login response has no state. Please start again.")
        pending = await self._store.take_login(state)
        if pending is None:
            log.warning("login rejected: unknown, expired or reused state")
            raise LoginExpired("This login link is unknown, expired or was already used. Please start again.")
        binding = self._login_cookie.read(request)
        if binding is None or _binding_hash(binding) != pending.binding:
            log.warning("login rejected: state not bound to this browser")
            raise LoginError("This login was started in another browser. Please start again.")
        iss = _single(params, "iss")
        if iss is not None and iss != self._settings.oidc.issuer:
            log.warning("login rejected: iss parameter mismatch (RFC 9207)")
            raise LoginError("The login response came from an unexpected identity provider.")
        error = _single(params, "error")
        if error is not None:
            code = error if _OAUTH_ERROR_CODE.match(error) else "invalid_error"
            log.warning("login rejected: the OP answered error=%s", code)
            if code == "access_denied":
                raise LoginCancelled("The sign-in was cancelled or access was denied at the identity provider.")
            raise LoginError(f"The identity provider answered with the error “{code}”.")
        tokens, userinfo = await self._tokens(params, pending)
        return await self._open_session(request, pending, tokens, userinfo)

    async def _tokens(self, params: MultiDictProxy[str] | MultiDictProxy[str | bytes | web.FileField],
                      pending: PendingLogin) -> tuple[TokenSet, Claims]:
        """Tokens (and userinfo, when used) for this response type: code → token endpoint; hybrid also
        checks the front-channel ID token (nonce, c_hash) and that both ID tokens name the same iss and
        sub (OIDC Core §3.3.2.12)."""
        response_type = pending.request.response_type.split()
        code = _single(params, "code")
        front_claims = None
        if "id_token" in response_type:
            raw = _single(params, "id_token")
            if raw is None:
                raise LoginError("The login response has no ID token.")
            front_claims = await self._client.front_channel_id_token(raw, pending.request, code=code)
            if "code" not in response_type:
                return self._client.implicit_token_set(raw, front_claims), {}
        if code is None:
            raise LoginError("The login response has no authorization code.")
        try:
            response = await self._client.redeem_code(code, pending.request)
        except ProviderError as exc:
            log.warning("login rejected: token exchange failed (error=%s)", exc.error)
            raise LoginError("The identity provider did not accept the login. Please start again.") from None
        return await self._verify(response, pending, front_claims)

    async def _verify(self, response: CodeResponse, pending: PendingLogin,
                      front_claims: Claims | None) -> tuple[TokenSet, Claims]:
        """The code's tokens once its ID token verified, and the userinfo claims (when used): that request
        goes out first, so the OP answers it while we verify; its claims count only once the ID token
        verified and names the same sub (OIDC Core §5.3.4)."""
        subject: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        fetch = None
        if self._settings.oidc.use_userinfo and response.access_token:
            fetch = asyncio.create_task(self._client.userinfo(response.access_token, expected_sub=subject))
        try:
            if fetch is not None:
                await asyncio.sleep(0)  # lets it send the request
            tokens = await self._client.verify_code_response(response, pending.request)
            if front_claims is not None and (front_claims["iss"], front_claims["sub"]) != (
                    tokens.claims["iss"], tokens.claims["sub"]):
                raise InvalidToken("front- and back-channel ID tokens disagree")
        except BaseException:
            if fetch is not None:
                fetch.cancel()
                await asyncio.gather(fetch, return_exceptions=True)
            raise
        subject.set_result(tokens.claims["sub"])
        return tokens, {} if fetch is None else await fetch

    async def _open_session(self, request: web.Request, pending: PendingLogin, tokens: TokenSet,
                            userinfo: Claims) -> web.StreamResponse:
        now = self._clock()
        claims = tokens.claims
        op_sid = claims.get("sid")
        session = Session(
            sub=str(claims["sub"]), iss=str(claims["iss"]), created_at=now, last_seen=now,
            claims=Session.identity_claims(claims, userinfo), access_token=tokens.access_token,
            refresh_token=tokens.refresh_token, id_token=tokens.id_token, expires_at=tokens.expires_at,
            op_sid=op_sid if isinstance(op_sid, str) else None,
        )
        old_sid = self._session_cookie.read(request)
        if old_sid is not None:
            await self._store.delete(old_sid)
        sid = self._session_cookie.new_id()  # a fresh id at every login: no session fixation
        await self._store.put(sid, session, ttl=self._sessions.ttl(session, now))
        rd = safe_return_path(pending.request.rd, self._settings.access.redirect_domains)
        response: web.StreamResponse
        if pending.form is not None and self._replay_post is not None:
            response = self._replay_post(request, rd, pending.form)
        else:
            response = web.Response(status=302, headers={"Location": rd, "Cache-Control": "no-store"})
        self._session_cookie.set(response, sid)
        self._on_login("success", "")
        log.info("login succeeded", extra={"sub": session.sub})
        return response

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        """End the local session, revoke its refresh token (RFC 7009), then RP-initiated logout at the OP.

        The browser ends up on `rd`, or on the signed-out page when there is none."""
        rd = safe_return_path(request.query["rd"]) if "rd" in request.query else SIGNED_OUT_PATH
        loaded = await self._sessions.load(request)
        id_token = refresh_token = None
        if loaded is not None:
            sid, session = loaded
            id_token, refresh_token = session.id_token, session.refresh_token
            await self._store.delete(sid)  # first: a copied cookie stops working on every replica
        post_logout = self._settings.oidc.post_logout_redirect_url or f"{self._settings.public_url}{rd}"
        end_session = self._client.end_session_url(id_token=id_token, post_logout_redirect=post_logout,
                                                   state=self._session_cookie.new_id())
        # An OP that does not answer can neither revoke nor show its logout page: the local sign-out
        # stands, and the browser lands here rather than on a connection error. Asked only when there
        # is something to do at the OP.
        if (refresh_token or end_session is not None) and not await self._op_reachable():
            refresh_token = end_session = None
        if refresh_token:
            await self._client.revoke(refresh_token)
        location = str(end_session) if end_session is not None else rd
        response = web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
        self._session_cookie.clear(response)
        return response

    async def _op_reachable(self) -> bool:
        try:
            await self._client.ensure_reachable()
        except ProviderUnavailable:
            return False
        return True


def _single(params: MultiDictProxy[str] | MultiDictProxy[str | bytes | web.FileField], name: str) -> str | None:
    """The parameter's one value; a repeated parameter is an error (RFC 6749 §3.1)."""
    values = params.getall(name, [])
    if not values:
        return None
    if len(values) > 1 or not isinstance(values[0], str) or not values[0]:
        raise LoginError("The login response is malformed.")
    return values[0]
