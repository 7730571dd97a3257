"""A hung Redis (SIGSTOP: connections are accepted, nothing is answered) against RedisStore, built with the
client app.py builds (gateway.session.connect), on a redis-server of this test's own.

Every store operation must end within session.redis_timeout (plus scheduling slack) with StoreUnavailable,
whether it uses a pooled connection or opens a new one; after SIGCONT everything works again by itself:
the data, the local cache, the refresh lock. A refresh lock requested during the hang may be set by Redis
only when it continues, with nobody owning it: the store must take it back, else every request of that
session waits for the lock's TTL and then gets 503 (the soak's stray 503s outside the outage window).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway.config import Settings
from gateway.errors import ConfigError, StoreUnavailable
from gateway.oidc.client import AuthRequest
from gateway.session.connect import redis_client as connect_redis
from gateway.session.model import PendingLogin, Session
from gateway.session.redis import RedisStore
from tests.integration.test_refresh import API, bearer_seen, login, session_record
from tests.support.redis_servers import RedisFarm, needs_redis_server

pytestmark = needs_redis_server

TIMEOUT = 0.4  # session.redis_timeout in these tests
SLACK = 1.0  # scheduling slack on top of it: an upper bound, not a benchmark
PREFIX = "hung:"
POLL = 0.02


@dataclass
class Hung:
    """A redis-server of the test's own that can be paused (SIGSTOP) and resumed (SIGCONT)."""

    farm: RedisFarm
    port: int

    def pause(self) -> None:
        os.kill(self.farm.procs[0].pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.farm.procs[0].pid, signal.SIGCONT)

    def sync(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def calls(self, command: str) -> int:
        """How often Redis has run `command` (INFO commandstats): what reached it, not what we sent."""
        with self.sync() as client:
            return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[Hung]:
    farm = RedisFarm(tmp_path)
    port = farm.start("hung")  # --save "" --appendonly no: SIGSTOP/SIGCONT keeps the data in memory
    yield Hung(farm, port)
    for proc in farm.procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
    farm.stop()


@pytest.fixture
async def store_factory(hung: Hung, settings_factory: Callable[..., Settings]
                        ) -> AsyncIterator[Callable[..., Awaitable[RedisStore]]]:
    """RedisStore on a client built as app.py builds it; `url_query` adds options to the Redis URL."""
    listeners: list[asyncio.Task[None]] = []
    async with contextlib.AsyncExitStack() as stack:

        async def make(cache_ttl: float = 0.0, url_query: str = "") -> RedisStore:
            settings = settings_factory(session={"redis_url": f"redis://127.0.0.1:{hung.port}/0{url_query}",
                                                 "redis_timeout": f"{TIMEOUT}s", "key_prefix": PREFIX})
            client = await stack.enter_async_context(connect_redis(settings.session))
            store = RedisStore(client, prefix=PREFIX, cache_ttl=cache_ttl, timeout=settings.session.redis_timeout)
            listeners.append(asyncio.create_task(store.listen()))
            return store

        yield make
        for listener in listeners:
            listener.cancel()
        await asyncio.gather(*listeners, return_exceptions=True)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(POLL)  # poll interval
    raise AssertionError(f"timed out waiting for {what}")


def session(sub: str = "alice") -> Session:
    return Session(sub=sub, iss="http://op", created_at=1.0, last_seen=1.0, claims={"email": "a@x"},
                   access_token="at", refresh_token="rt", id_token="it", expires_at=99.0, op_sid="s1")


async def timed_failure(operation: Awaitable[Any]) -> float:
    """Seconds until `operation` raised StoreUnavailable (it must)."""
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await operation
    return time.monotonic() - started


async def enter_lock(store: RedisStore, sid: str) -> None:
    async with store.lock(sid, ttl=30):
        pass


@pytest.mark.parametrize("url_query", ["", "?socket_timeout=5&socket_connect_timeout=5"],
                         ids=["socket timeouts from redis_timeout", "longer socket timeouts in the URL"])
async def test_every_operation_ends_within_the_deadline_and_works_again_after_sigcont(
        hung: Hung, store_factory: Callable[..., Awaitable[RedisStore]], url_query: str) -> None:
    """The deadline bounds the operation as a whole: longer socket timeouts in the URL do not extend it."""
    store = await store_factory(url_query=url_query)
    await store.put("sid", session(), ttl=60)  # leaves a pooled connection: both kinds get tested below
    hung.pause()
    pending = PendingLogin(request=AuthRequest(state="st", nonce="n", code_verifier="v", rd="/"),
                           binding="b" * 64, created_at=1.0)
    operations = {
        "get": store.get("sid", cached=False),
        "touch (compare-and-set)": store.put("sid", replace(session(), last_seen=2.0), ttl=60, create=False,
                                             expect=session()),
        "put": store.put("other", session("bob"), ttl=60),
        "delete": store.delete("other"),
        "lock": enter_lock(store, "sid"),
        "ping (/readyz)": store.ping(),
        "put_login": store.put_login("st", pending, ttl=60),
        "take_login": store.take_login("st"),
        "back-channel logout": store.delete_for_logout("http://op", sid="s1", sub=None),
        "remember_jti": store.remember_jti("http://op", "jti", ttl=60),
    }
    took = dict(zip(operations, await asyncio.gather(*map(timed_failure, operations.values())), strict=True))
    assert all(seconds < TIMEOUT + SLACK for seconds in took.values()), took
    assert min(took.values()) >= TIMEOUT * 0.9, took  # they did wait for Redis: the deadline, not a shortcut
    print(f"{len(took)} operations: StoreUnavailable after {min(took.values()):.2f}-{max(took.values()):.2f} s")  # noqa: T201
    hung.resume()

    async def back() -> bool:
        try:
            return await store.get("sid", cached=False) == session()
        except StoreUnavailable:
            return False
    await eventually(back, "the session to be readable again")  # kept: SIGSTOP loses nothing


async def test_a_lock_requested_during_the_hang_does_not_outlive_it(
        hung: Hung, store_factory: Callable[..., Awaitable[RedisStore]]) -> None:
    store = await store_factory()
    await store.ping()  # a pooled connection: the SET below is written to Redis's socket, then waits there
    key = f"{PREFIX}k:{hashlib.sha256(b'sid').hexdigest()}"
    hung.pause()
    assert await timed_failure(enter_lock(store, "sid")) < TIMEOUT + SLACK
    hung.resume()
    with hung.sync() as check:

        def released() -> bool:
            # The queued SET NX ran once Redis continued (30 s TTL, owner gone); the store took it back.
            return hung.calls("set") >= 1 and check.exists(key) == 0
        await eventually(lambda: asyncio.to_thread(released), "the orphaned refresh lock to be released", 5.0)
    async with store.lock("sid", ttl=30) as held:
        assert held  # the next refresher gets it at once, not after the 30 s TTL


async def test_local_cache_serves_no_longer_than_its_ttl_during_the_hang_and_comes_back(
        hung: Hung, store_factory: Callable[..., Awaitable[RedisStore]]) -> None:
    cache_ttl = 0.5
    store = await store_factory(cache_ttl=cache_ttl)
    await store.put("sid", session(), ttl=60)

    last_read = 0.0

    async def cached() -> bool:
        """Two reads in a row cost Redis one GET: the second came from the local cache."""
        nonlocal last_read
        before = await asyncio.to_thread(hung.calls, "get")
        assert await store.get("sid") == session()
        last_read = time.monotonic()  # the cached copy expires before last_read + cache_ttl
        assert await store.get("sid") == session()
        return await asyncio.to_thread(hung.calls, "get") == before + 1
    await eventually(cached, "the local cache (subscribed to invalidations)")
    hung.pause()

    async def refused() -> bool:
        try:
            await store.get("sid")
        except StoreUnavailable:
            return True
        assert time.monotonic() - last_read < cache_ttl + 0.05, "served from the cache beyond its ttl"
        return False
    await eventually(refused, "the first StoreUnavailable", cache_ttl + TIMEOUT + SLACK)
    for _ in range(3):  # and no read passes any more
        assert await timed_failure(store.get("sid")) < TIMEOUT + SLACK
    hung.resume()
    await eventually(cached, "the local cache to be used again after SIGCONT")


async def test_a_waiting_request_takes_the_refresh_over_when_the_lock_frees_early(
        gateway_factory: Any, clock: Any, redis_client: redis.Redis) -> None:
    """A refresh lock left without owner (a replica that died, an outage's SET) holds off the session's
    requests only until it goes, not for the whole wait (oidc.http_timeout) followed by a 503."""
    gw = await gateway_factory("gateway-public", session={"idle_timeout": "8h"})
    browser, first = await login(gw)
    async with browser:
        record = session_record(gw, browser, redis_client)
        sid_hash = record["key"].rpartition(":")[2]
        redis_client.set(f"{gw.settings.session.key_prefix}k:{sid_hash}", "nobody", px=1000)
        clock.advance(record["expires_at"] - clock() + 1)  # expired: keeping the old token is no option
        started = time.monotonic()
        async with browser.get(f"{gw.url}/after-expiry", headers=API) as resp:
            assert resp.status == 200, await resp.text()
            assert bearer_seen(await resp.text()) != first
        assert time.monotonic() - started < gw.settings.oidc.http_timeout / 2


async def test_the_first_operation_after_a_redis_restart_succeeds(
        hung: Hung, store_factory: Callable[..., Awaitable[RedisStore]]) -> None:
    """A restart kills every pooled connection: the next operation reconnects (one retry of a dropped
    connection) instead of failing once per stale connection."""
    store = await store_factory()
    await asyncio.gather(*(store.ping() for _ in range(5)))  # several pooled connections
    hung.farm.stop()
    hung.farm.start("hung", port=hung.port)
    assert await asyncio.gather(*(store.get(f"sid-{i}", cached=False) for i in range(5))) == [None] * 5
    await store.put("sid", session(), ttl=60)
    assert await store.get("sid", cached=False) == session()


def test_redis_timeout_must_be_positive(settings_factory: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as failed:
        settings_factory(session={"redis_timeout": "0s"})
    assert any(path == "session.redis_timeout" for path, _ in failed.value.problems)
    assert settings_factory().session.redis_timeout == 1.0  # the default: 503 within a second
