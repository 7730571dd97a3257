"""The session store through every kind of session.redis_url, against real redis-server processes.

Sentinel and Cluster come from tests/support/redis_plugin.py (once per session); the TLS and ACL
servers are started by this module on free ports and killed at its end. Each test builds the store
the way the gateway does: settings → gateway.session.connect.redis_client → RedisStore.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from gateway.config import Settings
from gateway.errors import StoreUnavailable
from gateway.session.connect import redis_client
from gateway.session.redis import RedisStore
from tests.integration.test_store_contract import pending, session
from tests.support.redis_plugin import MASTER_PASSWORD, SentinelSetup
from tests.support.redis_servers import Certs, RedisFarm, free_port, make_certs, needs_redis_server

pytestmark = needs_redis_server

ACL_USER, ACL_PASSWORD = "alice", "p@ss/w:rd+%"  # characters that must be percent-encoded in a URL
ACL_PASSWORD_IN_URL = "p%40ss%2Fw%3Ard%2B%25"


@contextlib.asynccontextmanager
async def store_for(settings: Settings) -> AsyncIterator[RedisStore]:
    async with redis_client(settings.session) as client:
        yield RedisStore(client, prefix=settings.session.key_prefix)


def tagged_prefix() -> str:
    return f"{{gw-test-{uuid.uuid4().hex}}}:"


async def round_trip(store: RedisStore) -> None:
    await store.ping()
    await store.put("sid-1", session(), ttl=60)
    assert await store.get("sid-1") == session()
    await store.delete("sid-1")
    assert await store.get("sid-1") is None


# --- Fail closed, and fast ----------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0", "redis+sentinel://127.0.0.1:{port}/svc",
                                 "redis+cluster://127.0.0.1:{port}/"])
async def test_unreachable_redis_is_store_unavailable_within_a_second(settings_factory: Any, url: str) -> None:
    settings = settings_factory(session={"redis_url": url.format(port=free_port()), "key_prefix": tagged_prefix()})
    async with store_for(settings) as store:
        started = time.monotonic()
        for call in (store.ping(), store.get("s"), store.put("s", session(), ttl=1), store.take_login("s")):
            with pytest.raises(StoreUnavailable):
                await call
        # redis-py's default policy (10 retries with back-off) holds each call ~3.5 s before failing.
        assert time.monotonic() - started < 1.5


# --- Cluster -------------------------------------------------------------------------------------


async def test_every_store_operation_works_on_a_cluster(redis_cluster: str, settings_factory: Any) -> None:
    settings = settings_factory(session={"redis_url": redis_cluster, "key_prefix": tagged_prefix()})
    async with store_for(settings) as store:
        assert isinstance(store._redis, RedisCluster)
        await round_trip(store)
        await store.put_login("st", pending(), ttl=60)
        assert await store.take_login("st") == pending()
        assert await store.take_login("st") is None
        async with store.lock("sid-1", ttl=5) as held:
            assert held
            async with store.lock("sid-1", ttl=5) as again:
                assert not again
        async with store.lock("sid-1", ttl=5) as after_release:
            assert after_release
        if hasattr(store, "delete_for_logout"):  # the back-channel logout indexes (multi-key Lua + MULTI)
            await store.put("a1", session("alice"), ttl=60)
            await store.put("a2", session("alice"), ttl=60)
            await store.put("b1", session("bob"), ttl=60)
            assert await store.delete_for_logout("http://op", sid=None, sub="alice") == 2
            assert await store.get("a1") is None and await store.get("b1") is not None
            assert await store.delete_for_logout("http://op", sid="s1", sub=None) == 1  # bob's op_sid is s1
        if hasattr(store, "remember_jti"):
            assert await store.remember_jti("http://op", "jti-1", ttl=60)
            assert not await store.remember_jti("http://op", "jti-1", ttl=60)
        await cleanup(store)


async def cleanup(store: RedisStore) -> None:
    async for key in store._redis.scan_iter(match=f"{store._prefix}*"):
        await store._redis.delete(key)


async def test_cluster_spreads_gateways_by_hash_tag(redis_cluster: str, settings_factory: Any) -> None:
    """Two gateways (two tags) land on different nodes: the cluster shards by key_prefix."""
    nodes = set()
    for _ in range(40):
        settings = settings_factory(session={"redis_url": redis_cluster, "key_prefix": tagged_prefix()})
        async with store_for(settings) as store:
            cluster = store._redis
            assert isinstance(cluster, RedisCluster)
            await store.put("sid", session(), ttl=5)
            nodes.add(cluster.get_node_from_key(store._key("s", "sid")).name)
            await store.delete("sid")
        if len(nodes) > 1:
            return
    raise AssertionError(f"every key_prefix landed on {nodes}")


# --- Sentinel ------------------------------------------------------------------------------------


async def test_store_round_trip_through_sentinel_lands_on_the_master(
        redis_sentinel: SentinelSetup, settings_factory: Any) -> None:
    settings = settings_factory(session={"redis_url": redis_sentinel.url})
    async with store_for(settings) as store:
        await round_trip(store)
        await store.put("kept", session(), ttl=60)
        with redis.Redis(port=redis_sentinel.master_port, password=MASTER_PASSWORD) as master:
            assert master.pttl(store._key("s", "kept")) > 0  # written to the master the sentinel named
        await store.delete("kept")


async def test_sentinel_password_is_sent_to_the_sentinel(redis_sentinel: SentinelSetup,
                                                         settings_factory: Any) -> None:
    without = redis_sentinel.url.partition("?")[0]
    async with store_for(settings_factory(session={"redis_url": without})) as store:
        with pytest.raises(StoreUnavailable):
            await store.ping()


async def test_gateway_is_ready_through_sentinel(redis_sentinel: SentinelSetup, gateway_factory: Any) -> None:
    gw = await gateway_factory(session={"redis_url": redis_sentinel.url})
    resp = await gw.client.get("/readyz")
    assert resp.status == 200, await resp.text()


# --- Unix socket ---------------------------------------------------------------------------------


async def test_unix_socket_with_database_number(tmp_path_factory: pytest.TempPathFactory,
                                                settings_factory: Any) -> None:
    workdir = tmp_path_factory.mktemp("redis-unix")
    path = workdir / "redis.sock"
    farm = RedisFarm(workdir)
    try:
        farm.start("unix", "--unixsocket", str(path), "--unixsocketperm", "700", port=0)
        async with store_for(settings_factory(session={"redis_url": f"unix://{path}?db=5"})) as store:
            await round_trip(store)
            await store.put("kept", session(), ttl=60)
            with redis.Redis(unix_socket_path=str(path), db=5) as db5:
                assert db5.exists(store._key("s", "kept")) == 1
    finally:
        farm.stop()


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Certs]]:
    """A TLS-only redis-server (no plain port) that also requires a client certificate."""
    workdir = tmp_path_factory.mktemp("redis-tls")
    certs = make_certs(workdir)
    farm = RedisFarm(workdir)
    port = free_port()
    try:
        farm.start("tls", "--tls-port", str(port), "--tls-cert-file", str(certs.server_cert),
                   "--tls-key-file", str(certs.server_key), "--tls-ca-cert-file", str(certs.ca),
                   "--tls-auth-clients", "yes", port=0)
        yield port, certs
    finally:
        farm.stop()


def rediss(port: int, **options: Path | str) -> str:
    return f"rediss://127.0.0.1:{port}/0?" + "&".join(f"{name}={value}" for name, value in options.items())


async def test_rediss_with_ca_and_client_certificate(tls_redis: tuple[int, Certs], settings_factory: Any) -> None:
    port, certs = tls_redis
    url = rediss(port, ssl_ca_certs=certs.ca, ssl_certfile=certs.client_cert, ssl_keyfile=certs.client_key)
    async with store_for(settings_factory(session={"redis_url": url})) as store:
        await round_trip(store)


@pytest.mark.parametrize("case", ["server certificate from another CA", "no client certificate", "plain redis://"])
async def test_tls_failures_fail_closed(tls_redis: tuple[int, Certs], settings_factory: Any, case: str) -> None:
    port, certs = tls_redis
    url = {
        "server certificate from another CA": rediss(port, ssl_ca_certs=certs.other_ca,
                                                     ssl_certfile=certs.client_cert, ssl_keyfile=certs.client_key),
        "no client certificate": rediss(port, ssl_ca_certs=certs.ca),
        "plain redis://": f"redis://127.0.0.1:{port}/0?socket_timeout=0.5",
    }[case]
    async with store_for(settings_factory(session={"redis_url": url})) as store:
        with pytest.raises(StoreUnavailable):
            await store.ping()


# --- ACL -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Only the ACL user alice may connect: the default user is off."""
    farm = RedisFarm(tmp_path_factory.mktemp("redis-acl"))
    try:
        yield farm.start("acl", "--user", ACL_USER, "on", f">{ACL_PASSWORD}", "~*", "+@all",
                         "--user", "default", "off")
    finally:
        farm.stop()


def acl_settings(tmp_path: Path, port: int, settings_factory: Callable[..., Settings], how: str) -> Settings:
    if how == "in the URL":
        return settings_factory(session={"redis_url": f"redis://{ACL_USER}:{ACL_PASSWORD_IN_URL}@127.0.0.1:{port}/0"})
    secret = tmp_path / "redis-password"
    secret.write_text(ACL_PASSWORD + "\n")
    return settings_factory(session={"redis_url": f"redis://127.0.0.1:{port}/0", "redis_username": ACL_USER,
                                     "redis_password_file": str(secret)})


@pytest.mark.parametrize("how", ["in the URL", "redis_username + redis_password_file"])
async def test_acl_user_and_password(acl_redis: int, tmp_path: Path, settings_factory: Any, how: str) -> None:
    async with store_for(acl_settings(tmp_path, acl_redis, settings_factory, how)) as store:
        await round_trip(store)
        assert await store._redis.acl_whoami() in (ACL_USER, ACL_USER.encode())


@pytest.mark.parametrize("session_overrides", [
    {},  # the default user is off
    {"redis_username": ACL_USER},  # no password
    {"redis_username": ACL_USER, "redis_password": "wrong"},
])
async def test_acl_without_the_right_credentials_is_unavailable(acl_redis: int, settings_factory: Any,
                                                                session_overrides: dict[str, str]) -> None:
    settings = settings_factory(session={"redis_url": f"redis://127.0.0.1:{acl_redis}/0", **session_overrides})
    async with store_for(settings) as store:
        with pytest.raises(StoreUnavailable):
            await store.ping()
