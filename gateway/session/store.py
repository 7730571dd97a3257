"""SessionStore protocol and the in-memory store (single process; for the demo and tests).

Stores know nothing of cookies: they keep Session and PendingLogin records under opaque ids, each
with a TTL. Login states are single-use: `take_login` returns a record at most once. `lock(sid)`
elects one refresher per session (per process for MemoryStore, across replicas for RedisStore).
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
    async def get(self, sid: str) -> Session | None: ...
    async def put(self, sid: str, session: Session, *, ttl: float) -> None: ...
    async def delete(self, sid: str) -> None: ...
    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None: ...
    async def take_login(self, state: str) -> PendingLogin | None: ...
    async def ping(self) -> None: ...
    def lock(self, sid: str, *, ttl: float) -> AbstractAsyncContextManager[bool]:
        """Try to become the one refresher of `sid`: yields True when held (released on exit), else False."""
        ...


class MemoryStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._sessions: dict[str, tuple[float, bytes]] = {}
        self._logins: dict[str, tuple[float, bytes]] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def _purge(self) -> None:
        now = self._clock()
        for table in (self._sessions, self._logins):
            for key in [k for k, (deadline, _) in table.items() if deadline <= now]:
                del table[key]

    async def get(self, sid: str) -> Session | None:
        entry = self._sessions.get(sid)
        if entry is None or entry[0] <= self._clock():
            return None
        return Session.loads(entry[1])

    async def put(self, sid: str, session: Session, *, ttl: float) -> None:
        self._purge()
        self._sessions[sid] = (self._clock() + ttl, session.dumps())

    async def delete(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None:
        self._purge()
        self._logins[state] = (self._clock() + ttl, pending.dumps())

    async def take_login(self, state: str) -> PendingLogin | None:
        entry = self._logins.pop(state, None)
        if entry is None or entry[0] <= self._clock():
            return None
        return PendingLogin.loads(entry[1])

    async def ping(self) -> None:
        return None

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
