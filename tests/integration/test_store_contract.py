"""One contract, two stores: MemoryStore and RedisStore (real Redis: one node, Sentinel, Cluster) behave
the same."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.config import SessionSettings
from gateway.errors import StoreUnavailable
from gateway.oidc.client import AuthRequest
from gateway.session.connect import redis_client
from gateway.session.model import PendingLogin, Session
from gateway.session.redis import RedisStore
from gateway.session.store import MemoryStore, SessionStore
from tests.conftest import REDIS_URL, FakeClock, free_port


@pytest.fixture(params=["memory", "redis", "redis-sentinel", "redis-cluster"])
async def store(request: Any, redis_prefix: str, clock: FakeClock) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    if request.param == "redis":
        redis = Redis.from_url(REDIS_URL)
        yield RedisStore(redis, prefix=redis_prefix)
        await redis.aclose()
        return
    # The same contract through Sentinel and Cluster (tests/support/redis_plugin.py), client built as app.py
    # does; a cluster needs every key of one gateway in one slot: a hash-tagged prefix.
    url = (request.getfixturevalue("redis_sentinel").url if request.param == "redis-sentinel"
           else request.getfixturevalue("redis_cluster"))
    prefix = f"{{{redis_prefix}}}:"
    settings = SessionSettings.model_validate({"redis_url": url, "key_prefix": prefix, "cookie_secret": "x" * 32})
    async with redis_client(settings) as client:
        yield RedisStore(client, prefix=prefix)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)


def session(sub: str = "alice") -> Session:
    return Session(sub=sub, iss="http://op", created_at=1.0, last_seen=1.0, claims={"email": "a@x"},
                   access_token="at", refresh_token="rt", id_token="it", expires_at=99.0, op_sid="s1")


def pending(state: str = "st") -> PendingLogin:
    return PendingLogin(request=AuthRequest(state=state, nonce="n", code_verifier="v", rd="/x"),
                        binding="b" * 64, created_at=1.0)


async def test_put_get_delete_round_trip(store: SessionStore) -> None:
    assert await store.get("sid-1") is None
    await store.put("sid-1", session(), ttl=60)
    assert await store.get("sid-1") == session()
    await store.delete("sid-1")
    assert await store.get("sid-1") is None


async def test_login_state_is_single_use(store: SessionStore) -> None:
    await store.put_login("st", pending(), ttl=60)
    assert await store.take_login("st") == pending()
    assert await store.take_login("st") is None
    assert await store.take_login("never-stored") is None


async def test_records_expire(store: SessionStore, clock: FakeClock) -> None:
    await store.put("sid-2", session(), ttl=30)
    await store.put_login("st2", pending("st2"), ttl=30)
    if isinstance(store, RedisStore):  # Redis expires by its own clock: assert the TTLs it holds
        ttls = [await store._redis.pttl(store._key(kind, ident)) for kind, ident in (("s", "sid-2"), ("l", "st2"))]
        assert all(29_000 < ttl <= 30_000 for ttl in ttls)
        return
    clock.advance(31)
    assert await store.get("sid-2") is None
    assert await store.take_login("st2") is None


async def test_ping(store: SessionStore) -> None:
    await store.ping()


async def test_redis_down_is_store_unavailable() -> None:
    redis = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    store = RedisStore(redis, prefix="x:")
    for call in (store.get("s"), store.put("s", session(), ttl=1), store.delete("s"), store.ping(),
                 store.take_login("s"), store.put_login("s", pending(), ttl=1),
                 store.delete_for_logout("http://op", sid="s1", sub=None),
                 store.delete_for_logout("http://op", sid=None, sub="alice"),
                 store.remember_jti("http://op", "j", ttl=1)):
        with pytest.raises(StoreUnavailable):
            await call
    await redis.aclose()


# Back-channel logout (BCL 1.0 §2.7): which sessions a logout token's sid / sub end.

def of(sub: str, op_sid: str | None, iss: str = "http://op") -> Session:
    return replace(session(sub), op_sid=op_sid, iss=iss)


async def alive(store: SessionStore, *sids: str) -> set[str]:
    return {sid for sid in sids if await store.get(sid) is not None}


async def test_logout_by_sid_ends_the_sessions_of_that_op_session_only(store: SessionStore) -> None:
    await store.put("a1", of("alice", "op-1"), ttl=60)
    await store.put("a2", of("alice", "op-1"), ttl=60)  # a second login within the same OP session
    await store.put("a3", of("alice", "op-2"), ttl=60)
    await store.put("a4", of("alice", None), ttl=60)
    await store.put("b1", of("bob", "op-3"), ttl=60)
    # With both sid and sub, the sid decides: alice's other sessions stay.
    assert await store.delete_for_logout("http://op", sid="op-1", sub="alice") == 2
    assert await alive(store, "a1", "a2", "a3", "a4", "b1") == {"a3", "a4", "b1"}
    assert await store.delete_for_logout("http://op", sid="op-1", sub=None) == 0
    assert await store.delete_for_logout("http://op", sid="op-2", sub=None) == 1
    assert await alive(store, "a3", "a4", "b1") == {"a4", "b1"}


async def test_logout_by_sub_alone_ends_every_session_of_that_subject(store: SessionStore) -> None:
    await store.put("a1", of("alice", "op-1"), ttl=60)
    await store.put("a2", of("alice", "op-2"), ttl=60)
    await store.put("a3", of("alice", None), ttl=60)
    await store.put("b1", of("bob", "op-3"), ttl=60)
    await store.put("b2", of("bob", None), ttl=60)
    assert await store.delete_for_logout("http://op", sid=None, sub="alice") == 3
    assert await alive(store, "a1", "a2", "a3", "b1", "b2") == {"b1", "b2"}
    assert await store.delete_for_logout("http://op", sid=None, sub="alice") == 0


async def test_logout_is_scoped_to_the_issuer(store: SessionStore) -> None:
    await store.put("o1", of("alice", "op-1", iss="http://other-op"), ttl=60)
    assert await store.delete_for_logout("http://op", sid="op-1", sub=None) == 0
    assert await store.delete_for_logout("http://op", sid=None, sub="alice") == 0
    assert await alive(store, "o1") == {"o1"}
    assert await store.delete_for_logout("http://other-op", sid=None, sub="alice") == 1


async def test_logout_without_sid_or_sub_ends_nothing(store: SessionStore) -> None:
    await store.put("a1", of("alice", "op-1"), ttl=60)
    assert await store.delete_for_logout("http://op", sid=None, sub=None) == 0
    assert await alive(store, "a1") == {"a1"}


async def test_deleted_and_rewritten_sessions_are_counted_once(store: SessionStore) -> None:
    await store.put("a1", of("alice", "op-1"), ttl=60)
    await store.delete("a1")  # leaves a stale index entry behind in Redis: harmless
    await store.put("a2", of("alice", "op-1"), ttl=60)
    await store.put("a2", of("alice", "op-1"), ttl=90)  # a refresh or idle-timeout touch rewrites it
    assert await store.delete_for_logout("http://op", sid="op-1", sub=None) == 1
    assert await alive(store, "a1", "a2") == set()


async def test_expired_sessions_are_not_counted(store: SessionStore, clock: FakeClock) -> None:
    if isinstance(store, RedisStore):  # Redis expires by its own clock: see test_logout_indexes_outlive_*
        pytest.skip("MemoryStore only")
    await store.put("a1", of("alice", "op-1"), ttl=30)
    clock.advance(31)
    assert await store.delete_for_logout("http://op", sid=None, sub="alice") == 0


async def test_jti_is_remembered_once_per_issuer(store: SessionStore) -> None:
    assert await store.remember_jti("http://op", "j1", ttl=60) is True
    assert await store.remember_jti("http://op", "j1", ttl=60) is False
    assert await store.remember_jti("http://op", "j2", ttl=60) is True
    assert await store.remember_jti("http://other-op", "j1", ttl=60) is True


async def test_remembered_jti_expires(store: SessionStore, clock: FakeClock) -> None:
    assert await store.remember_jti("http://op", "j1", ttl=30) is True
    if isinstance(store, RedisStore):
        assert 29_000 < await store._redis.pttl(store._key("j", "http://op|j1")) <= 30_000
        return
    clock.advance(29)
    assert await store.remember_jti("http://op", "j1", ttl=30) is False
    clock.advance(2)
    assert await store.remember_jti("http://op", "j1", ttl=30) is True


async def test_concurrent_replicas_remember_a_jti_once(store: SessionStore) -> None:
    results = await asyncio.gather(*(store.remember_jti("http://op", "j-race", ttl=60) for _ in range(20)))
    assert results.count(True) == 1


async def test_logout_indexes_outlive_their_sessions(redis_prefix: str) -> None:
    redis = Redis.from_url(REDIS_URL)
    store = RedisStore(redis, prefix=redis_prefix)
    sid_index = f"{redis_prefix}x:sid:{hashlib.sha256(b'http://op|op-1').hexdigest()}"
    sub_index = f"{redis_prefix}x:sub:{hashlib.sha256(b'http://op|alice').hexdigest()}"
    try:
        await store.put("a1", of("alice", "op-1"), ttl=100)
        await store.put("a2", of("alice", "op-1"), ttl=30)  # a shorter-lived member never shortens the set
        for index in (sid_index, sub_index):
            assert 99_000 < await redis.pttl(index) <= 100_000
        await store.put("a2", of("alice", "op-1"), ttl=200)  # a longer-lived one extends it
        for index in (sid_index, sub_index):
            assert 199_000 < await redis.pttl(index) <= 200_000
        assert await redis.smembers(sid_index) == {store._key("s", "a1").encode(), store._key("s", "a2").encode()}
        await store.put("n1", of("alice", None), ttl=60)  # no OP sid: in the sub index only
        assert store._key("s", "n1").encode() in await redis.smembers(sub_index)
        assert store._key("s", "n1").encode() not in await redis.smembers(sid_index)
    finally:
        await redis.aclose()
