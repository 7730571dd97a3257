"""RedisStore: sessions and login states in Redis, shared by every process and replica.

Keys are `<prefix>s:<sha256(sid)>`, `<prefix>l:<sha256(state)>` and the refresh lock
`<prefix>k:<sha256(sid)>` (SET NX PX with a random owner token, released by compare-and-delete):
a Redis dump or MONITOR never shows a value that works as a cookie or as a `state`. Every record
has a TTL; login states are consumed with GETDEL, so one state can complete one login only, even
across replicas. Redis failures become StoreUnavailable (503): the gateway fails closed.

Back-channel logout indexes: `put` adds the session's key to the sets `<prefix>x:sid:<sha256(iss|sid)>`
(when the ID token had a `sid`) and `<prefix>x:sub:<sha256(iss|sub)>` in the same Lua call, and only
ever extends a set's TTL, so a set outlives its members (every session write goes through `put`).
`delete` leaves stale members behind: deleting a missing key is harmless and the sets expire.
Seen logout-token ids are `<prefix>j:<sha256(iss|jti)>` (SET NX PX: one winner across replicas).

Redis Cluster: `put` (Lua) and `delete_for_logout` (MULTI) touch several keys at once, which a cluster
allows only within one hash slot; config therefore requires a `{hash tag}` in key_prefix with a
redis+cluster:// URL, so every key of one gateway lives in one slot (other gateways, other slots).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from gateway.errors import StoreUnavailable
from gateway.session.model import PendingLogin, Session

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

# RedisClusterException is no RedisError: redis-py raises it when no cluster node is reachable.
_FAILURES = (RedisError, RedisClusterException)


# Release a lock only if we still own it (the TTL may have handed it to someone else).
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


# The session and its index entries in one atomic round trip; an index TTL is only ever extended.
_PUT = """
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS do
  redis.call('sadd', KEYS[i], KEYS[1])
  if redis.call('pttl', KEYS[i]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[i], ARGV[2]) end
end
return 1
"""


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


class RedisStore:
    def __init__(self, redis: Redis | RedisCluster, *, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}{kind}:{hashlib.sha256(ident.encode()).hexdigest()}"

    async def get(self, sid: str) -> Session | None:
        try:
            raw = await self._redis.get(self._key("s", sid))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        return None if raw is None else Session.loads(raw)

    def _logout_index(self, iss: str, *, sid: str | None, sub: str | None) -> str | None:
        if sid is not None:
            return self._key("x:sid", f"{iss}|{sid}")
        return None if sub is None else self._key("x:sub", f"{iss}|{sub}")

    async def put(self, sid: str, session: Session, *, ttl: float) -> None:
        indexes = [self._logout_index(session.iss, sid=session.op_sid, sub=None),
                   self._logout_index(session.iss, sid=None, sub=session.sub)]
        keys = [self._key("s", sid), *(index for index in indexes if index is not None)]
        try:
            await self._redis.eval(_PUT, len(keys), *keys, session.dumps(), _ms(ttl))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc

    async def delete(self, sid: str) -> None:
        try:
            await self._redis.delete(self._key("s", sid))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc

    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None:
        try:
            await self._redis.set(self._key("l", state), pending.dumps(), px=_ms(ttl))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc

    async def take_login(self, state: str) -> PendingLogin | None:
        try:
            raw = await self._redis.getdel(self._key("l", state))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        return None if raw is None else PendingLogin.loads(raw)

    @contextlib.asynccontextmanager
    async def lock(self, sid: str, *, ttl: float) -> AsyncIterator[bool]:
        key, token = self._key("k", sid), secrets.token_hex(16)
        try:
            acquired = bool(await self._redis.set(key, token, nx=True, px=_ms(ttl)))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        try:
            yield acquired
        finally:
            if acquired:
                with contextlib.suppress(*_FAILURES):  # the TTL frees it anyway
                    await self._redis.eval(_UNLOCK, 1, key, token)

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except _FAILURES as exc:
            raise _unavailable(exc) from exc

    async def delete_for_logout(self, iss: str, *, sid: str | None, sub: str | None) -> int:
        index = self._logout_index(iss, sid=sid, sub=sub)  # BCL 1.0 §2.7: a sid wins over a sub
        if index is None:
            return 0
        try:
            members = list(await self._redis.smembers(index))
            if not members:
                return 0
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(*members)
                pipe.srem(index, *members)  # only what we read: a session added meanwhile stays indexed
                deleted, _ = await pipe.execute()
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        return int(deleted)

    async def remember_jti(self, iss: str, jti: str, *, ttl: float) -> bool:
        try:
            return bool(await self._redis.set(self._key("j", f"{iss}|{jti}"), b"1", nx=True, px=_ms(ttl)))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> StoreUnavailable:
    log.error("session store (Redis) error: %s", type(exc).__name__)
    return StoreUnavailable()
