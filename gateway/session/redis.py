"""RedisStore: sessions and login states in Redis, shared by every process and replica.

Keys are `<prefix>s:<sha256(sid)>`, `<prefix>l:<sha256(state)>` and the refresh lock
`<prefix>k:<sha256(sid)>` (SET NX PX with a random owner token, released by compare-and-delete):
a Redis dump or MONITOR never shows a value that works as a cookie or as a `state`. Every record
has a TTL; login states are consumed with GETDEL, so one state can complete one login only, even
across replicas. Redis failures become StoreUnavailable (503): the gateway fails closed.

Deadline: every operation (one or two round trips, a fresh connection and the one retry on a dropped
connection included) ends within `timeout` seconds (session.redis_timeout) or raises StoreUnavailable,
so a hung Redis (paused, overloaded, a black-holed network) costs a request that much, never more. A
command given up on may still run once Redis continues: harmless for reads and idempotent writes; a
refresh lock taken that way would have no owner, so it is released in the background (`lock`).

Back-channel logout indexes: `put` adds the session's key to the sets `<prefix>x:sid:<sha256(iss|sid)>`
(when the ID token had a `sid`) and `<prefix>x:sub:<sha256(iss|sub)>` in the same Lua call, and only
ever extends a set's TTL, so a set outlives its members (every session write goes through `put`).
`delete` leaves stale members behind: deleting a missing key is harmless and the sets expire.
Seen logout-token ids are `<prefix>j:<sha256(iss|jti)>` (SET NX PX: one winner across replicas).

Local cache (session.local_cache_ttl > 0): a session read or written moments ago is served from process
memory, so the hot path makes no Redis round trip. It is kept coherent across replicas: every put that
replaces a record and every delete publishes the session key on `<prefix>invalidate`, every other
process drops that key (a put that creates a record publishes nothing: records are created only under
a freshly minted session id, which no process can have cached), and the cache is used
only while the subscription is up (lost → emptied and off; an ACL user needs the channel permission
`&<prefix>invalidate`, else the cache simply stays off). A read or write that raced an invalidation
is not cached. Refresh decisions read past the cache, and the idle "touch" is a
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

__all__ = ["DEFAULT_TIMEOUT", "RedisStore"]

log = logging.getLogger(__name__)

# RedisClusterException is no RedisError: redis-py raises it when no cluster node is reachable.
_FAILURES = (RedisError, RedisClusterException)
DEFAULT_TIMEOUT = 1.0  # session.redis_timeout's default


# Release a lock only if we still own it (the TTL may have handed it to someone else).
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
# The same for many locks at once (KEYS[i] with ARGV[i]); one 0/1 per lock.
_UNLOCK_MANY = """
local released = {}
for i = 1, #KEYS do
  released[i] = redis.call('get', KEYS[i]) == ARGV[i] and redis.call('del', KEYS[i]) or 0
end
return released
"""


# The session and its index entries in one atomic round trip; an index TTL is only ever extended.
# ARGV[3] == '0': a rewrite, only if the session still exists; ARGV[4] non-empty: only if the stored
# record is still exactly that (compare-and-set: a touch never reverts a concurrent refresh).
# Returns 0 when not written, 1 when an existing record was replaced, 2 when the record is new.
_PUT = """
local existed = redis.call('exists', KEYS[1]) == 1
if ARGV[3] == '0' and not existed then return 0 end
if ARGV[4] ~= '' and redis.call('get', KEYS[1]) ~= ARGV[4] then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
for i = 2, #KEYS do
  redis.call('sadd', KEYS[i], KEYS[1])
  if redis.call('pttl', KEYS[i]) < tonumber(ARGV[2]) then redis.call('pexpire', KEYS[i], ARGV[2]) end
end
if existed then return 1 end
return 2
"""
_REPLACED, _CREATED = 1, 2
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
# Releasing locks whose SET may still be queued in a paused Redis: retry with this back-off (seconds) until a
# release deletes one, or Redis has answered this many times that it is not ours (its SET never ran).
_RELEASE_BACKOFF = (0.1, 1.0)
_RELEASE_ANSWERS = 3
_RELEASE_BATCH = 100
_MAX_ORPHANS = 10_000


def _ms(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


class RedisStore:
    def __init__(self, redis: Redis | RedisCluster, *, prefix: str, cache_ttl: float = 0.0,
                 cipher: RecordCipher | None = None, max_pending_logins: int = 100_000,
                 max_logins_per_browser: int = 10, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        # Refresh locks that may be held without our knowing (see lock()) → answers seen; and their releaser.
        self._orphans: dict[tuple[str, str], int] = {}
        self._releaser: asyncio.Task[None] | None = None
        # None: plaintext records (tests of the store's mechanics only; app.py always passes one).
        self._cipher = cipher
        self._max_pending_logins = max_pending_logins
        self._max_logins_per_browser = max_logins_per_browser
        self._warned_unreadable = False
        self._channel = f"{prefix}invalidate"
        # Local read cache: used only while subscribed to the invalidation channel (`listen`).
        self._cache_ttl = cache_ttl
        self._cache: OrderedDict[str, tuple[float, Session]] = OrderedDict()
        self._session_keys: dict[str, str] = {}  # sid -> its record's key (_session_key)
        self._listening = False
        self._generation = 0  # bumped by every invalidation: a read racing one is not cached
        self._origin = secrets.token_hex(8)  # our own invalidations come back too: ignore those

    @contextlib.asynccontextmanager
    async def _deadline(self) -> AsyncIterator[float]:
        """Bound one store operation by the timeout (yields its loop-time deadline); any Redis failure or
        the deadline → StoreUnavailable."""
        try:
            async with asyncio.timeout(self._timeout) as scope:
                yield scope.when() or 0.0
        except (*_FAILURES, TimeoutError) as exc:
            raise _unavailable(exc) from exc

    def _key(self, kind: str, ident: str) -> str:
        return f"{self._prefix}{kind}:{hashlib.sha256(ident.encode()).hexdigest()}"

    def _session_key(self, sid: str) -> str:
        """self._key("s", sid), remembered: a session request asks for it every time (the local cache
        is keyed by it), and the hash was measurable there. Bounded like the cache."""
        key = self._session_keys.get(sid)
        if key is None:
            if len(self._session_keys) >= _CACHE_SIZE:
                self._session_keys.clear()
            key = self._session_keys[sid] = self._key("s", sid)
        return key

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
        key = self._session_key(sid)
        use_cache = cached and self._listening
        if use_cache:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        generation = self._generation
        async with self._deadline():
            raw = await self._redis.get(key)
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
                async with asyncio.timeout(self._timeout):
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
            except (*_FAILURES, TimeoutError) as exc:
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
        keys = [self._session_key(sid), *(index for index in indexes if index is not None)]
        self._forget(keys[0])
        generation = self._generation
        async with self._deadline() as until:
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
        # A new record is in no replica's cache (its id was just minted): only a replaced one needs the
        # invalidation round trip.
        if written == _REPLACED:
            await self._publish(keys[0], until=until)
        # What we just wrote is the current record unless an invalidation came in meanwhile: cached, so
        # the browser's next request (the redirect after a login) needs no Redis read. Forgotten first:
        # a read of this process that raced the write must not cache what it read (the older record).
        raced = generation != self._generation
        self._forget(keys[0])
        if written and self._listening and not raced:
            self._remember(keys[0], session)
        return bool(written)

    async def _stored_bytes(self, key: str, expect: Session) -> bytes | None:
        """The stored record's bytes when it holds exactly `expect`, else None."""
        raw = await self._redis.get(key)
        if raw is None or self._open(raw, key) != expect.dumps():
            return None
        return raw.encode() if isinstance(raw, str) else raw

    async def delete(self, sid: str) -> None:
        key = self._session_key(sid)
        self._forget(key)
        async with self._deadline() as until:
            await self._redis.delete(key)
        await self._publish(key, until=until)

    async def _publish(self, *keys: str, until: float) -> None:
        """Tell every replica's local cache to drop these keys, by the deadline of the write it follows.
        Best effort: a replica that misses it serves its copy for at most cache_ttl; an ACL user without
        channel rights has no cache at all."""
        if self._cache_ttl <= 0:
            return
        try:
            async with asyncio.timeout_at(until):
                for key in keys:
                    await self._redis.publish(self._channel, f"{self._origin} {key}")
        except (*_FAILURES, TimeoutError) as exc:
            log.warning("session cache invalidation not published: %s", type(exc).__name__)

    async def put_login(self, state: str, pending: PendingLogin, *, ttl: float) -> None:
        key = self._key("l", state)
        keys = [key, f"{self._prefix}lz", self._key("lb", pending.binding)]
        async with self._deadline():
            await self._redis.eval(_PUT_LOGIN, len(keys), *keys, self._seal(pending.dumps(), key), _ms(ttl),
                                   self._max_logins_per_browser, self._max_pending_logins)

    async def take_login(self, state: str) -> PendingLogin | None:
        async with self._deadline():
            raw = await self._redis.getdel(key := self._key("l", state))
        plaintext = None if raw is None else self._open(raw, key)
        return None if plaintext is None else PendingLogin.loads(plaintext)

    @contextlib.asynccontextmanager
    async def lock(self, sid: str, *, ttl: float) -> AsyncIterator[bool]:
        key, token = self._key("k", sid), secrets.token_hex(16)
        try:
            async with self._deadline():
                acquired = bool(await self._redis.set(key, token, nx=True, px=_ms(ttl)))
        except StoreUnavailable:
            # The SET may still run when a paused Redis continues (or only its answer was lost): a lock
            # nobody owns would hold off every refresh of this session for `ttl`. Take it back once Redis is.
            self._release_later(key, token)
            raise
        try:
            yield acquired
        except BaseException:
            if acquired:  # the store may be what failed: never make the failing request wait for it again
                self._release_later(key, token)
            raise
        if acquired:
            try:
                async with asyncio.timeout(self._timeout):
                    await self._redis.eval(_UNLOCK, 1, key, token)
            except (*_FAILURES, TimeoutError):
                self._release_later(key, token)

    def _release_later(self, key: str, token: str) -> None:
        """Release this lock in the background, once Redis answers (one task for all such locks)."""
        if len(self._orphans) < _MAX_ORPHANS:
            self._orphans[(key, token)] = 0
        if self._releaser is None or self._releaser.done():
            try:
                self._releaser = asyncio.get_running_loop().create_task(self._release_orphans())
            except RuntimeError:  # no loop (a generator finalised at shutdown): the TTL frees the lock
                self._orphans.clear()

    async def _release_orphans(self) -> None:
        """Delete each listed lock that holds our token; retry while Redis does not answer. A SET queued
        before an outage runs before Redis answers anything sent later on another connection (in the same
        event-loop turn at the latest), so "not ours" answered a few times, spaced out, means it never ran."""
        delay = _RELEASE_BACKOFF[0]
        while self._orphans:
            batch = list(self._orphans)[:_RELEASE_BATCH]
            try:
                async with asyncio.timeout(self._timeout):
                    released = await self._redis.eval(_UNLOCK_MANY, len(batch), *(key for key, _ in batch),
                                                      *(token for _, token in batch))
            except (*_FAILURES, TimeoutError):
                released = None  # no answer: nothing learnt
            for entry, deleted in zip(batch, released or (), strict=False):
                self._orphans[entry] += 1
                if deleted or self._orphans[entry] >= _RELEASE_ANSWERS:
                    del self._orphans[entry]
            if self._orphans:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RELEASE_BACKOFF[1])

    async def ping(self) -> None:
        async with self._deadline():
            await self._redis.ping()

    async def delete_for_logout(self, iss: str, *, sid: str | None, sub: str | None) -> int:
        index = self._logout_index(iss, sid=sid, sub=sub)  # BCL 1.0 §2.7: a sid wins over a sub
        if index is None:
            return 0
        async with self._deadline() as until:
            members = list(await self._redis.smembers(index))
            if not members:
                return 0
            # Only what we read is unindexed: a session added meanwhile stays indexed.
            deleted = await self._redis.eval(_LOGOUT, 1 + len(members), index, *members)
            self._forget()
        await self._publish(*(m.decode() if isinstance(m, bytes) else str(m) for m in members), until=until)
        return int(deleted)

    async def remember_jti(self, iss: str, jti: str, *, ttl: float) -> bool:
        async with self._deadline():
            return bool(await self._redis.set(self._key("j", f"{iss}|{jti}"), b"1", nx=True, px=_ms(ttl)))


def _unavailable(exc: Exception) -> StoreUnavailable:
    # A bare TimeoutError is our own deadline; redis-py's socket timeouts are redis.exceptions.TimeoutError.
    what = "no answer within session.redis_timeout" if type(exc) is TimeoutError else type(exc).__name__
    log.error("session store (Redis) error: %s", what)
    return StoreUnavailable()
