"""SessionStore protocol and the in-memory store (single process; for the demo and tests).

Stores know nothing of cookies: they keep Session and PendingLogin records under opaque ids, each
with a TTL. Login states are single-use: `take_login` returns a record at most once. `lock(sid)`
elects one refresher per session (per process for MemoryStore, across replicas for RedisStore).
Back-channel logout (BCL 1.0 §2.7): `delete_for_logout` ends the sessions an OP `sid` names, or,
given only a `sub`, every session of that subject; `remember_jti` records a logout token's `jti`
so a replay is refused (§2.6 step 8).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from gateway.session.model import PendingLogin, Session

__all__ = ["MemoryStore", "SessionStore"]


class SessionStore(Protocol):
    async def get(self, sid: str, *, cached: bool = True) -> Session | None:
        """The session; `cached=False` reads the shared store itself, past any local cache."""
        ...
    async def put(self, sid: str, session: Session, *, ttl: float, create: bool = True,
                  expect: Session | None = None) -> bool:
        """Store the session; True when written. `create=False`: only if it still exists (a rewrite never
        resurrects a session a logout deleted meanwhile); `expect`: only if the stored record is still
        exactly that one (compare-and-set)."""
        ...
    async def delete(self, sid: str) -> None: ...
    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None: ...
    async def take_login(self, state: str) -> PendingLogin | None: ...
    async def ping(self) -> None: ...
    async def delete_for_logout(self, iss: str, *, sid: str | None, sub: str | None) -> int:
        """End the sessions of OP session `sid`, or with only `sub` all of that subject's; returns how many."""
        ...
    async def remember_jti(self, iss: str, jti: str, *, ttl: float) -> bool:
        """Record a logout token id for `ttl` seconds: True when it was not seen before (atomically)."""
        ...
    def lock(self, sid: str, *, ttl: float) -> AbstractAsyncContextManager[bool]:
        """Try to become the one refresher of `sid`: yields True when held (released on exit), else False."""
        ...


class MemoryStore:
    def __init__(self, clock: Callable[[], float], *, max_pending_logins: int = 100_000,
                 max_logins_per_browser: int = 10) -> None:
        self._clock = clock
        self._max_pending_logins = max_pending_logins
        self._max_logins_per_browser = max_logins_per_browser
        self._login_binding: dict[str, str] = {}  # state → binding hash, for the per-browser bound
        self._sessions: dict[str, tuple[float, bytes]] = {}
        self._logins: dict[str, tuple[float, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._jtis: dict[tuple[str, str], float] = {}

    def _purge(self) -> None:
        now = self._clock()
        for table in (self._sessions, self._logins):
            for key in [k for k, (deadline, _) in table.items() if deadline <= now]:
                del table[key]
        for state in [s for s in self._login_binding if s not in self._logins]:
            del self._login_binding[state]

    async def get(self, sid: str, *, cached: bool = True) -> Session | None:
        entry = self._sessions.get(sid)
        if entry is None or entry[0] <= self._clock():
            return None
        return Session.loads(entry[1])

    async def put(self, sid: str, session: Session, *, ttl: float, create: bool = True,
                  expect: Session | None = None) -> bool:
        self._purge()
        current = self._sessions.get(sid)
        if (not create and current is None) or (expect is not None and (
                current is None or current[1] != expect.dumps())):
            return False
        self._sessions[sid] = (self._clock() + ttl, session.dumps())
        return True

    async def delete(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None:
        self._purge()
        # Bounded like RedisStore: per browser, then globally; dicts keep insertion order, oldest first.
        self._logins.pop(state, None)
        mine = [s for s, binding in self._login_binding.items() if binding == pending.binding and s in self._logins]
        for old in mine[:max(0, len(mine) + 1 - self._max_logins_per_browser)]:
            del self._logins[old]
        for old in list(self._logins)[:max(0, len(self._logins) + 1 - self._max_pending_logins)]:
            del self._logins[old]
        for old in [s for s in self._login_binding if s not in self._logins]:
            del self._login_binding[old]
        self._logins[state] = (self._clock() + ttl, pending.dumps())
        self._login_binding[state] = pending.binding

    async def take_login(self, state: str) -> PendingLogin | None:
        entry = self._logins.pop(state, None)
        self._login_binding.pop(state, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return PendingLogin.loads(entry[1])

    async def ping(self) -> None:
        return None

    async def delete_for_logout(self, iss: str, *, sid: str | None, sub: str | None) -> int:
        now = self._clock()
        ended = [key for key, (deadline, raw) in self._sessions.items()
                 if deadline > now and _ended_by_logout(Session.loads(raw), iss, sid=sid, sub=sub)]
        for key in ended:
            del self._sessions[key]
        return len(ended)

    async def remember_jti(self, iss: str, jti: str, *, ttl: float) -> bool:
        now = self._clock()
        for key in [k for k, deadline in self._jtis.items() if deadline <= now]:
            del self._jtis[key]
        if (iss, jti) in self._jtis:
            return False
        self._jtis[(iss, jti)] = now + ttl
        return True

    @contextlib.asynccontextmanager
    async def lock(self, sid: str, *, ttl: float) -> AsyncIterator[bool]:
        lock = self._locks.setdefault(sid, asyncio.Lock())
        if lock.locked():
            yield False
            return
        async with lock:
            try:
                yield True
            finally:
                self._locks.pop(sid, None)


def _ended_by_logout(session: Session, iss: str, *, sid: str | None, sub: str | None) -> bool:
    """BCL 1.0 §2.7: a `sid` names the OP session to end (even when `sub` comes too); only `sub`: all of them."""
    if session.iss != iss:
        return False
    if sid is not None:
        return session.op_sid == sid
    return sub is not None and session.sub == sub
