"""RedisStore: sessions and login states in Redis, shared by every process and replica.

Keys are `<prefix>s:<sha256(sid)>` and `<prefix>l:<sha256(state)>`: a Redis dump or MONITOR never
shows a value that works as a cookie or as a `state`. Every record has a TTL; login states are
consumed with GETDEL, so one state can complete one login only, even across replicas. Redis
failures become StoreUnavailable (503): the gateway fails closed.
"""

from __future__ import annotations

import hashlib
import logging
import math

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.errors import StoreUnavailable
from gateway.session.model import PendingLogin, Session

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)


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

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except RedisError as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: RedisError) -> StoreUnavailable:
    log.error("session store (Redis) error: %s", type(exc).__name__)
    return StoreUnavailable()
