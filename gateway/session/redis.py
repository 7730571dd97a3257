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

Local cache (session.local_cache_ttl > 0): a session read moments ago is served from process memory,
so the hot path makes no Redis round trip. It is kept coherent across replicas: every put and delete
publishes the session key on `<prefix>invalidate`, every other process drops that key, and the
cache is used only while the subscription is up (lost → emptied and off; an ACL user needs the
channel permission `&<prefix>invalidate`, else the cache simply stays off). A read that raced an
invalidation is not cached. Refresh decisions read past the cache, and the idle "touch" is a
compare-and-set on the record it read, so it never reverts a refresh made elsewhere meanwhile.

Redis Cluster: `put` and `delete_for_logout` (Lua) touch several keys at once, which a cluster
allows only within one hash slot; config therefore requires a `{hash tag}` in key_prefix with a
redis+cluster:// URL, so every key of one gateway lives in one slot (other gateways, other slots).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisClusterException, RedisError

from gateway.errors import StoreUnavailable
from gateway.session.crypto import RecordCipher, RecordUnreadable
from gateway.session.model import PendingLogin, Session

__all__ = ["RedisStore"]

log = logging.getLogger(__name__)

# RedisClusterException is no RedisError: redis-py raises it when no cluster node is reachable.
_FAILURES = (RedisError, RedisClusterException)


# Release a lock only if we still own it (the TTL may have handed it to someone else).
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"


# The session and its index entries in one atomic round trip; an index TTL is only ever extended.
# ARGV[3] == '0': a rewrite, only if the session still exists; ARGV[4] non-empty: only if the stored
# record is still exactly that (compare-and-set: a touch never reverts a concurrent refresh).
_PUT = """
if ARGV[3] == '0' and redis.call('exists', KEYS[1]) == 0 then return 0 end
if ARGV[4] ~= '' and redis.call('get', KEYS[1]) ~= ARGV[4] then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS do
  redis.call('sadd', KEYS[i], KEYS[1])
  if redis.call('pttl', KEYS[i]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[i], ARGV[2]) end
end
return 1
"""
# Back-channel logout: delete the indexed sessions and unindex them, atomically.
_LOGOUT = """
local n = 0
for i = 2, #KEYS do
  n = n + redis.call('del', KEYS[i])
  redis.call('srem', KEYS[1], KEYS[i])
end
return n
"""
# A new login state, bounded per browser (the login-binding cookie) and globally, oldest evicted first:
# KEYS[1] the state, KEYS[2] the global sorted set (member "<state key> <browser set key>", score: Redis
# time in µs, strictly increasing), KEYS[3] this browser's sorted set (member: state key). ARGV: record,
# ttl ms, per-browser cap, global cap. Evicted and expired entries leave both sets; an empty set is gone by itself.
_PUT_LOGIN = """
local t = redis.call('time')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ttl = tonumber(ARGV[2])
local newest = redis.call('zrange', KEYS[2], -1, -1, 'WITHSCORES')[2]
if newest and tonumber(newest) >= now then now = tonumber(newest) + 1 end
local expired = now - ttl * 1000
redis.call('set', KEYS[1], ARGV[1], 'PX', ttl)
for _, member in ipairs(redis.call('zrangebyscore', KEYS[2], '-inf', expired, 'LIMIT', 0, 100)) do
  local state, browser = string.match(member, '^(.-:l:%x+) (.+)$')
  if browser then redis.call('zrem', browser, state) end
  redis.call('zrem', KEYS[2], member)
end
redis.call('zremrangebyscore', KEYS[3], '-inf', expired)
redis.call('zadd', KEYS[3], now, KEYS[1])
redis.call('zadd', KEYS[2], now, KEYS[1] .. ' ' .. KEYS[3])
local excess = redis.call('zcard', KEYS[3]) - tonumber(ARGV[3])
if excess > 0 then
  for _, state in ipairs(redis.call('zrange', KEYS[3], 0, excess - 1)) do
    redis.call('del', state)
    redis.call('zrem', KEYS[3], state)
    redis.call('zrem', KEYS[2], state .. ' ' .. KEYS[3])
  end
end
excess = redis.call('zcard', KEYS[2]) - tonumber(ARGV[4])
if excess > 0 then
  for _, member in ipairs(redis.call('zrange', KEYS[2], 0, excess - 1)) do
    local state, browser = string.match(member, '^(.-:l:%x+) (.+)$')
    if state then redis.call('del', state); redis.call('zrem', browser, state) end
    redis.call('zrem', KEYS[2], member)
  end
end
redis.call('pexpire', KEYS[2], ttl)
redis.call('pexpire', KEYS[3], ttl)
return 1
"""
_CACHE_SIZE = 10_000


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


class RedisStore:
    def __init__(self, redis: Redis | RedisCluster, *, prefix: str, cache_ttl: float = 0.0,
                 cipher: RecordCipher | None = None, max_pending_logins: int = 100_000,
                 max_logins_per_browser: int = 10) -> None:
        self._redis = redis
        self._prefix = prefix
        # None: plaintext records (tests of the store's mechanics only; app.py always passes one).
        self._cipher = cipher
        self._max_pending_logins = max_pending_logins
        self._max_logins_per_browser = max_logins_per_browser
        self._warned_unreadable = False
        self._channel = f"{prefix}invalidate"
        # Local read cache: used only while subscribed to the invalidation channel (`listen`).
        self._cache_ttl = cache_ttl
        self._cache: OrderedDict[str, tuple[float, Session]] = OrderedDict()
        self._listening = False
        self._generation = 0  # bumped by every invalidation: a read racing one is not cached
        self._origin = secrets.token_hex(8)  # our own invalidations come back too: ignore those

    def _key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}{kind}:{hashlib.sha256(ident.encode()).hexdigest()}"

    def _seal(self, plaintext: bytes, key: str) -> bytes:
        return plaintext if self._cipher is None else self._cipher.seal(plaintext, key=key)

    def _open(self, stored: bytes | str, key: str) -> bytes | None:
        """The record's plaintext; None (read as "no record") when it does not authenticate under this key."""
        raw = stored.encode() if isinstance(stored, str) else stored
        if self._cipher is None:
            return raw
        try:
            return self._cipher.open(raw, key=key)
        except RecordUnreadable:
            # Once per process at WARNING (a secret removed too early would otherwise flood the log).
            level = logging.DEBUG if self._warned_unreadable else logging.WARNING
            self._warned_unreadable = True
            log.log(level, "a stored session or login record does not decrypt with the configured "
                           "encryption secrets; treated as absent")
            return None

    async def get(self, sid: str, *, cached: bool = True) -> Session | None:
        key = self._key("s", sid)
        use_cache = cached and self._listening
        if use_cache:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        generation = self._generation
        try:
            raw = await self._redis.get(key)
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        plaintext = None if raw is None else self._open(raw, key)
        session = None if plaintext is None else Session.loads(plaintext)
        if session is not None and use_cache and generation == self._generation:
            self._remember(key, session)
        return session

    def _remember(self, key: str, session: Session) -> None:
        self._cache[key] = (time.monotonic() + self._cache_ttl, session)
        self._cache.move_to_end(key)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    def _forget(self, key: str | None = None) -> None:
        self._generation += 1
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)

    async def listen(self) -> None:
        """Keep the local cache coherent: drop keys other replicas publish; without a subscription, no cache.

        Runs until cancelled; reconnects after a failure (the cache stays off and empty meanwhile).
        """
        if self._cache_ttl <= 0:
            return
        delay = 0.5
        while True:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(self._channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        self._forget()
                        self._listening, delay = True, 0.5
                    elif message["type"] == "message":
                        data = message["data"]
                        origin, _, key = (data.decode() if isinstance(data, bytes) else str(data)).partition(" ")
                        if origin != self._origin:
                            self._forget(key)
            except _FAILURES as exc:
                if delay == 0.5:  # once per outage, not at every retry
                    log.warning("session cache invalidation channel unavailable (%s); local cache off until "
                                "it is back", type(exc).__name__)
            finally:
                self._listening = False
                self._forget()
                with contextlib.suppress(*_FAILURES, RuntimeError):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _logout_index(self, iss: str, *, sid: str | None, sub: str | None) -> str | None:
        if sid is not None:
            return self._key("x:sid", f"{iss}|{sid}")
        return None if sub is None else self._key("x:sub", f"{iss}|{sub}")

    async def put(self, sid: str, session: Session, *, ttl: float, create: bool = True,
                  expect: Session | None = None) -> bool:
        indexes = [self._logout_index(session.iss, sid=session.op_sid, sub=None),
                   self._logout_index(session.iss, sid=None, sub=session.sub)]
        keys = [self._key("s", sid), *(index for index in indexes if index is not None)]
        self._forget(keys[0])
        try:
            expected = b""
            if expect is not None:
                # Encrypted records differ at every write (random nonce): compare the plaintext here, then
                # let the script compare the very bytes read, so a write in between still fails the set.
                stored = await self._stored_bytes(keys[0], expect) if self._cipher else expect.dumps()
                if stored is None:
                    return False
                expected = stored
            written = await self._redis.eval(_PUT, len(keys), *keys, self._seal(session.dumps(), keys[0]),
                                             _ms(ttl), "1" if create else "0", expected)
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        await self._publish(keys[0])
        return bool(written)

    async def _stored_bytes(self, key: str, expect: Session) -> bytes | None:
        """The stored record's bytes when it holds exactly `expect`, else None."""
        raw = await self._redis.get(key)
        if raw is None or self._open(raw, key) != expect.dumps():
            return None
        return raw.encode() if isinstance(raw, str) else raw

    async def delete(self, sid: str) -> None:
        key = self._key("s", sid)
        self._forget(key)
        try:
            await self._redis.delete(key)
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        await self._publish(key)

    async def _publish(self, *keys: str) -> None:
        """Tell every replica's local cache to drop these keys. Best effort: a replica that misses it
        serves its copy for at most cache_ttl; an ACL user without channel rights has no cache at all."""
        if self._cache_ttl <= 0:
            return
        try:
            for key in keys:
                await self._redis.publish(self._channel, f"{self._origin} {key}")
        except _FAILURES as exc:
            log.warning("session cache invalidation not published: %s", type(exc).__name__)

    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None:
        key = self._key("l", state)
        keys = [key, f"{self._prefix}lz", self._key("lb", pending.binding)]
        try:
            await self._redis.eval(_PUT_LOGIN, len(keys), *keys, self._seal(pending.dumps(), key), _ms(ttl),
                                   self._max_logins_per_browser, self._max_pending_logins)
        except _FAILURES as exc:
            raise _unavailable(exc) from exc

    async def take_login(self, state: str) -> PendingLogin | None:
        try:
            raw = await self._redis.getdel(key := self._key("l", state))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        plaintext = None if raw is None else self._open(raw, key)
        return None if plaintext is None else PendingLogin.loads(plaintext)

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
            # Only what we read is unindexed: a session added meanwhile stays indexed.
            deleted = await self._redis.eval(_LOGOUT, 1 + len(members), index, *members)
            self._forget()
        except _FAILURES as exc:
            raise _unavailable(exc) from exc
        await self._publish(*(m.decode() if isinstance(m, bytes) else str(m) for m in members))
        return int(deleted)

    async def remember_jti(self, iss: str, jti: str, *, ttl: float) -> bool:
        try:
            return bool(await self._redis.set(self._key("j", f"{iss}|{jti}"), b"1", nx=True, px=_ms(ttl)))
        except _FAILURES as exc:
            raise _unavailable(exc) from exc


def _unavailable(exc: Exception) -> StoreUnavailable:
    log.error("session store (Redis) error: %s", type(exc).__name__)
    return StoreUnavailable()
