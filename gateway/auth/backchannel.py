"""POST /oauth2/backchannel_logout: OpenID Connect Back-Channel Logout 1.0, the RP side.

Trusts: a `logout_token` (one, form-encoded, BCL §2.5) that TokenVerifier.logout_token accepts:
signed like an ID token by our OP for our client_id, with the logout event, `sid` and/or `sub`, no
`nonce`, a `jti`, within its lifetime. Rejects everything else, and a `jti` already seen (§2.6 step
8; remembered in the store until the token could no longer verify, so across replicas too), with
400 `invalid_request` in JSON (§2.8). On success it ends the sessions the store indexes under that
`sid`, or with only a `sub` all of that subject's (§2.7), and answers 200 with no-store.
It is server-to-server: no session cookie, no CSRF check, no auth middleware (not the proxy route).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from gateway.errors import InvalidRequest, InvalidToken
from gateway.oidc.verify import TokenVerifier
from gateway.session.store import SessionStore

__all__ = ["BackchannelLogout"]

log = logging.getLogger(__name__)


class BackchannelLogout:
    def __init__(self, verifier: TokenVerifier, store: SessionStore, *, clock: Callable[[], float],
                 on_logout: Callable[[str, int], None] | None = None) -> None:
        self._verifier = verifier
        self._store = store
        self._clock = clock
        self._on_logout = on_logout or (lambda outcome, sessions: None)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        values = form.getall("logout_token", [])
        if len(values) != 1 or not isinstance(values[0], str) or not values[0]:
            raise self._rejected("logout_token missing or repeated")
        try:
            token = await self._verifier.logout_token(values[0])
        except InvalidToken as exc:
            raise self._rejected(exc.detail) from None
        if not await self._store.remember_jti(token.iss, token.jti, ttl=token.not_after - self._clock()):
            raise self._rejected("jti replayed")
        ended = await self._store.delete_for_logout(token.iss, sid=token.sid, sub=token.sub)
        self._on_logout("success", ended)
        log.info("back-channel logout ended %d session(s)", ended,
                 extra={"by": "sid" if token.sid is not None else "sub"})
        return web.Response(status=200, headers={"Cache-Control": "no-store"})

    def _rejected(self, reason: str) -> InvalidRequest:
        """Count and log a rejection (the reason is a fixed phrase, never the token)."""
        self._on_logout("rejected", 0)
        log.warning("back-channel logout rejected: %s", reason)
        return InvalidRequest(f"The logout_token was rejected: {reason}.")
