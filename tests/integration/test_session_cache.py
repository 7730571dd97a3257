"""The local session cache of RedisStore: coherent across replicas through pub/sub, off without it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.session.model import Session
from gateway.session.redis import RedisStore
from tests.conftest import REDIS_URL


def session(token: str = "at-1", last_seen: float = 1.0) -> Session:
    return Session(sub="alice", iss="http://op", created_at=1.0, last_seen=last_seen, access_token=token,
                   refresh_token="rt-1")


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 2.0) -> None:
    """Bounded wait for a pub/sub message to arrive (delivery is asynchronous by nature)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.fixture
async def replicas(redis_prefix: str) -> AsyncIterator[tuple[RedisStore, RedisStore, Redis]]:
    raw = Redis.from_url(REDIS_URL)
    a = RedisStore(Redis.from_url(REDIS_URL), prefix=redis_prefix, cache_ttl=60)
    b = RedisStore(Redis.from_url(REDIS_URL), prefix=redis_prefix, cache_ttl=60)
    tasks = [asyncio.create_task(store.listen()) for store in (a, b)]
    await eventually(lambda: asyncio.sleep(0, result=a._listening and b._listening))
    yield a, b, raw
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for store in (a, b):
        await store._redis.aclose()
    await raw.aclose()


async def test_a_read_is_served_from_memory(replicas: Any) -> None:
    a, _, raw = replicas
    await a.put("sid", session(), ttl=60)
    assert (await a.get("sid")).access_token == "at-1"
    # Change Redis behind the store's back (no publish): the cached copy is what `get` returns,
    # while a read past the cache sees Redis.
    await raw.set(a._key("s", "sid"), session("changed").dumps())
    assert (await a.get("sid")).access_token == "at-1"
    assert (await a.get("sid", cached=False)).access_token == "changed"


async def test_a_write_on_one_replica_invalidates_the_other(replicas: Any) -> None:
    a, b, _ = replicas
    await a.put("sid", session("at-1"), ttl=60)
    assert (await b.get("sid")).access_token == "at-1"  # b caches it
    await a.put("sid", session("at-2"), ttl=60)
    await eventually(lambda: _token(b, "sid", "at-2"))


async def test_a_delete_on_one_replica_invalidates_the_other(replicas: Any) -> None:
    a, b, _ = replicas
    await a.put("sid", session(), ttl=60)
    assert await b.get("sid") is not None
    await a.delete("sid")
    await eventually(lambda: _absent(b, "sid"))


async def test_back_channel_logout_invalidates_every_replica(replicas: Any) -> None:
    a, b, _ = replicas
    await a.put("sid", session(), ttl=60)
    assert await b.get("sid") is not None
    assert await a.delete_for_logout("http://op", sid=None, sub="alice") == 1
    await eventually(lambda: _absent(b, "sid"))


async def test_a_write_is_served_from_memory(replicas: Any) -> None:
    a, _, raw = replicas
    await a.put("sid", session("at-1"), ttl=60)
    # No read came first: the record just written is what the next request gets, without Redis.
    await raw.set(a._key("s", "sid"), session("changed").dumps())
    assert (await a.get("sid")).access_token == "at-1"
    assert (await a.get("sid", cached=False)).access_token == "changed"


async def test_only_a_replaced_record_is_published(replicas: Any, redis_prefix: str) -> None:
    a, _, raw = replicas
    listener = raw.pubsub()
    await listener.subscribe(f"{redis_prefix}invalidate")
    await a.put("created", session(), ttl=60)  # a new id: nobody can have it cached
    await a.put("replaced", session("at-1"), ttl=60)
    await a.put("replaced", session("at-2"), ttl=60)
    # Messages from one publisher arrive in order: the first one names the replaced record.
    message = None
    for _ in range(3):  # the subscription's confirmation reads as None
        message = message or await listener.get_message(ignore_subscribe_messages=True, timeout=2.0)
    assert message is not None
    assert message["data"].decode().endswith(a._key("s", "replaced"))
    await listener.aclose()


async def test_without_subscription_nothing_is_cached(redis_prefix: str) -> None:
    redis, raw = Redis.from_url(REDIS_URL), Redis.from_url(REDIS_URL)
    store = RedisStore(redis, prefix=redis_prefix, cache_ttl=60)  # listen() not running
    await store.put("sid", session(), ttl=60)
    await store.get("sid")
    await raw.set(store._key("s", "sid"), session("changed").dumps())
    assert (await store.get("sid")).access_token == "changed"
    await redis.aclose()
    await raw.aclose()


async def test_touch_is_compare_and_set(replicas: Any) -> None:
    a, b, _ = replicas
    original = session("at-1", last_seen=1.0)
    await a.put("sid", original, ttl=60)
    refreshed = session("at-2", last_seen=1.0)
    await b.put("sid", refreshed, ttl=60, create=False)  # a refresh elsewhere
    touched = dataclasses.replace(original, last_seen=99.0)
    assert await a.put("sid", touched, ttl=60, create=False, expect=original) is False
    assert (await a.get("sid", cached=False)).access_token == "at-2"  # the refresh survives
    assert await a.put("sid", dataclasses.replace(refreshed, last_seen=99.0), ttl=60, create=False,
                       expect=refreshed) is True


async def test_rewrite_never_resurrects_a_deleted_session(replicas: Any) -> None:
    a, _, _ = replicas
    assert await a.put("gone", session(), ttl=60, create=False) is False
    assert await a.get("gone", cached=False) is None


async def _token(store: RedisStore, sid: str, token: str) -> bool:
    got = await store.get(sid)
    return got is not None and got.access_token == token


async def _absent(store: RedisStore, sid: str) -> bool:
    return await store.get(sid) is None


def test_the_remembered_record_keys_are_the_hashed_keys_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.session import redis as redis_module

    monkeypatch.setattr(redis_module, "_CACHE_SIZE", 3)
    store = RedisStore(Redis.from_url(REDIS_URL), prefix="p:")
    for n in range(10):
        assert store._session_key(f"sid-{n}") == store._key("s", f"sid-{n}")
        assert f"sid-{n}" not in store._session_key(f"sid-{n}")  # the sid never appears in Redis keys
        assert len(store._session_keys) <= 3
