"""One contract, two stores: MemoryStore and RedisStore (real Redis) behave the same."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.errors import StoreUnavailable
from gateway.oidc.client import AuthRequest
from gateway.session.model import PendingLogin, Session
from gateway.session.redis import RedisStore
from gateway.session.store import MemoryStore, SessionStore
from tests.conftest import REDIS_URL, FakeClock, free_port


@pytest.fixture(params=["memory", "redis"])
async def store(request: Any, redis_prefix: str, clock: FakeClock) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemoryStore(clock)
        return
    redis = Redis.from_url(REDIS_URL)
    yield RedisStore(redis, prefix=redis_prefix)
    await redis.aclose()


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
                 store.take_login("s"), store.put_login("s", pending(), ttl=1)):
        with pytest.raises(StoreUnavailable):
            await call
    await redis.aclose()
