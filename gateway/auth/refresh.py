"""Refresher: renew a session's access token `refresh_before_expiry` ahead of its expiry.

At most one refresh grant per session is in flight across all processes and replicas: the refresher
takes the store's lock for the session; everyone else waits briefly for the new token and reuses it,
so a provider that rotates refresh tokens never sees the old one twice (OAuth 2.1 §4.3.1 would then
revoke the whole grant). Waiters keep trying the lock: one freed early (its holder died, or the store
released a lock left over from an outage) is taken over at once instead of after the whole wait.
A rotated refresh token is stored at once; the old one is kept when the OP sends none.
`invalid_grant` ends the session (browser: back to login; API: 401). An unreachable or failing OP
does not: the current token is used until it really expires, then the request gets 503. A refreshed
ID token must name the same `sub` (OIDC Core §12.2), else the session ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from gateway.errors import InvalidToken, ProviderError, ProviderUnavailable
from gateway.oidc.client import OIDCClient
from gateway.session.model import Session
from gateway.session.store import SessionStore

__all__ = ["Refresher"]

log = logging.getLogger(__name__)


class Refresher:
    def __init__(self, client: OIDCClient, store: SessionStore, *, refresh_before_expiry: float,
                 ttl_of: Callable[[Session, float], float], clock: Callable[[], float],
                 wait_timeout: float, poll_interval: float = 0.05,
                 on_refresh: Callable[[str], None] | None = None) -> None:
        self._client = client
        self._store = store
        self._before = refresh_before_expiry
        self._ttl_of = ttl_of
        self._clock = clock
        self._wait = wait_timeout
        self._poll = poll_interval
        self._on_refresh = on_refresh or (lambda outcome: None)

    def due(self, session: Session) -> bool:
        return session.expires_at is not None and self._clock() >= session.expires_at - self._before

    async def refresh_if_due(self, sid: str, session: Session) -> Session | None:
        """The session with a usable access token, or None when the session has ended."""
        if not self.due(session):
            return session
        if session.refresh_token is None:
            return self._keep(session, ended_when_expired=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            async with self._store.lock(sid, ttl=self._wait + 5) as owner:
                if owner:
                    current = await self._store.get(sid, cached=False)  # the refresh token others may have rotated
                    if current is None:
                        return None
                    if not self.due(current):  # refreshed elsewhere between our read and the lock
                        return current
                    return await self._refresh(sid, current)
            # Another request or replica refreshes: wait for its result (bounded) and reuse it. Try the lock
            # again meanwhile: a holder that died (or a lock left over from a Redis outage) frees it early.
            if loop.time() >= deadline:
                return self._keep(session)
            await asyncio.sleep(self._poll)
            current = await self._store.get(sid, cached=False)
            if current is None:
                return None
            if current.access_token != session.access_token or not self.due(current):
                return current

    async def _refresh(self, sid: str, session: Session) -> Session | None:
        assert session.refresh_token is not None
        try:
            tokens = await self._client.refresh(session.refresh_token)
        except ProviderError as exc:
            if exc.error == "invalid_grant":
                log.warning("refresh token rejected (invalid_grant): session ended")
                self._on_refresh("invalid_grant")
                await self._store.delete(sid)
                return None
            log.error("refresh failed at the OP (error=%s); keeping the current token", exc.error)
            self._on_refresh("provider_error")
            return self._keep(session)
        except ProviderUnavailable:
            self._on_refresh("provider_unavailable")
            return self._keep(session)
        except InvalidToken as exc:
            log.error("refreshed ID token rejected (%s); keeping the current token", exc.detail)
            self._on_refresh("invalid_id_token")
            return self._keep(session)
        if tokens.claims and tokens.claims.get("sub") != session.sub:
            log.warning("refreshed ID token names another subject: session ended")
            self._on_refresh("subject_changed")
            await self._store.delete(sid)
            return None
        renewed = dataclasses.replace(
            session, access_token=tokens.access_token, refresh_token=tokens.refresh_token,
            id_token=tokens.id_token or session.id_token, expires_at=tokens.expires_at,
            claims={**session.claims, **Session.identity_claims(tokens.claims)},
        )
        await self._store.put(sid, renewed, ttl=self._ttl_of(renewed, self._clock()), create=False)
        self._on_refresh("success")
        return renewed

    def _keep(self, session: Session, *, ended_when_expired: bool = False) -> Session | None:
        """The current token while it is still valid; after expiry: None (no refresh token) or 503."""
        assert session.expires_at is not None
        if self._clock() < session.expires_at:
            return session
        if ended_when_expired:
            return None
        raise ProviderUnavailable()
