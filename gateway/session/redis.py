"""RedisStore: sessions and login states in Redis, shared by every process and replica.

Keys are `<prefix>s:<sha256(sid)>`, `<prefix>l:<sha256(state)>` and the refresh lock
`<prefix>k:<sha256(sid)>` (SET NX PX with a random owner token, released by compare-and-delete):
a Redis dump or MONITOR never shows a value that works as a cookie or as a `state`. Every record
has a TTL; login states are consumed with GETDEL, so one state can complete one login only, even
across replicas. Redis failures become StoreUnavailable (503): the gateway fails closed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable
from gateway.session.model import PendingLogin, Session

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)


# Release a lock only if we still own it (the TTL may have handed it to someone else).
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


class RedisStore:
    def __init__(self, redis: Redis, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}{kind}:{hashlib.sha256(ident.encode()).hexdigest()}"

    async def get(self, sid: str) -> Session | None:
        try:
            raw = await self._redis.get(self._key("s", sid))
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return None if raw is None else Session.loads(raw)

    async def put(self, sid: str, session: Session, *, ttl: float) -> None:
        try:
            await self._redis.set(self._key("s", sid), session.dumps(), px=_ms(ttl))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def delete(self, sid: str) -> None:
        try:
            await self._redis.delete(self._key("s", sid))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None:
        try:
            await self._redis.set(self._key("l", state), pending.dumps(), px=_ms(ttl))
        except RedisError as exc:
            raise _unavailable(exc) from exc

    async def take_login(self, state: str) -> PendingLogin | None:
        try:
            raw = await self._redis.getdel(self._key("l", state))
        except RedisError as exc:
            raise _unavailable(exc) from exc
        return None if raw is None else PendingLogin.loads(raw)

    @contextlib.asynccontextmanager
    async def lock(self, sid: str, *, ttl: float) -> AsyncIterator[bool]:
        key, token = self._key("k", sid), secrets.token_hex(16)
        try:
            acquired = bool(await self._redis.set(key, token, nx=True, px=_ms(ttl)))
        except RedisError as exc:
            raise _unavailable(exc) from exc
        try:
            yield acquired
        finally:
            if acquired:
                with contextlib.suppress(RedisError):  # the TTL frees it anyway
                    await self._redis.eval(_UNLOCK, 1, key, token)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: RedisError) -> StoreUnavailable:
    log.error("session store (Redis) error: %s", type(exc).__name__)
    return StoreUnavailable()
