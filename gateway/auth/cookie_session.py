"""SessionAuthenticator: session cookie → Session (from the store) → Identity.

Trusts only a cookie whose signature verifies and whose id names a live session record. A missing,
tampered or unknown cookie, or a session past its absolute `lifetime` or `idle_timeout`, reads as
"not logged in" (None), never as an error. The idle deadline slides with at most one store write per
`touch_interval` per session, so the hot path is one read. An access token due for renewal is
refreshed through the Refresher (one grant per session across replicas) before the identity is used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aiohttp import web

from gateway.auth.identity import Identity
from gateway.auth.refresh import Refresher
from gateway.config import SessionSettings
from gateway.session.cookie import SignedCookie
from gateway.session.model import Session
from gateway.session.store import SessionStore

__all__ = ["SessionAuthenticator"]

_IDENTITY_CACHE_SIZE = 1024  # the sessions in use right now; an entry outlives its store copy only until evicted


class SessionAuthenticator:
    def __init__(self, store: SessionStore, cookie: SignedCookie, settings: SessionSettings, *,
                 clock: Callable[[], float], refresher: Refresher | None = None,
                 touch_interval: float = 60.0) -> None:
        self._refresher = refresher
        self._store = store
        self._cookie = cookie
        self._lifetime = settings.lifetime
        self._idle = settings.idle_timeout
        self._clock = clock
        self._touch_interval = min(touch_interval, settings.idle_timeout / 2)
        # sid -> (the Session object, the Identity made from it). The store's local cache hands out the
        # same frozen Session object while it is current, so its Identity (and the headers built from
        # it) is made once; any other object (re-read, refreshed, touched) makes a new one.
        self._identities: dict[str, tuple[Session, Identity]] = {}

    def ttl(self, session: Session, now: float) -> float:
        return session.ttl(now, lifetime=self._lifetime, idle_timeout=self._idle)

    async def load(self, request: web.Request) -> tuple[str, Session] | None:
        """The live session of this request's cookie, its idle deadline slid when due; else None."""
        sid = self._cookie.read(request)
        if sid is None:
            return None
        session = await self._store.get(sid)
        if session is None:
            self._identities.pop(sid, None)  # ended (sign-out, back-channel logout, expiry): forget it now
            return None
        now = self._clock()
        if self.ttl(session, now) <= 0:
            self._identities.pop(sid, None)
            await self._store.delete(sid)
            return None
        if now - session.last_seen >= self._touch_interval:
            touched = dataclasses.replace(session, last_seen=now)
            # Compare-and-set: if the record changed meanwhile (a refresh elsewhere), leave it be.
            if await self._store.put(sid, touched, ttl=self.ttl(touched, now), create=False, expect=session):
                session = touched
        return sid, session

    async def authenticate(self, request: web.Request) -> Identity | None:
        loaded = await self.load(request)
        if loaded is None:
            return None
        sid, session = loaded
        if self._refresher is not None:
            refreshed = await self._refresher.refresh_if_due(sid, session)
            if refreshed is None:
                return None
            session = refreshed
        known = self._identities.get(sid)
        if known is not None and known[0] is session:
            return known[1]
        identity = Identity.from_claims({**session.claims, "sub": session.sub}, session.access_token,
                                        id_token=session.id_token)
        if known is None and len(self._identities) >= _IDENTITY_CACHE_SIZE:
            del self._identities[next(iter(self._identities))]  # oldest first
        self._identities[sid] = (session, identity)
        return identity
