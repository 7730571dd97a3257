"""Redis clients for the session store: one node, Sentinel or Cluster; TLS and ACL credentials.

The URL was validated by gateway.config (gateway.config.redis_url documents its syntax); this module
only turns it into a redis-py client. Credentials come from the URL or from session.redis_username /
redis_password (config rejects both at once). TLS verifies the server's certificate and host name by
default (ssl_ca_certs names the CA; ssl_cert_reqs=none turns verification off and is for tests only).
Sentinel: the sentinels are asked for the current master of `service_name` on every (re)connect, so a
failover needs no restart. Cluster: commands are routed by key slot; the store's multi-key operations
need every key of one gateway in one slot, which the key_prefix hash tag ensures (config checks it).
Clients connect lazily (nothing here does I/O until the first command), except that a cluster client
learns the slot map up front.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as ConnectionDropped
from redis.exceptions import RedisClusterException, RedisError

from gateway.config import SessionSettings
from gateway.config.redis_url import RedisTarget

__all__ = ["RedisClient", "redis_client"]

RedisClient = Redis | RedisCluster

# Fail fast (closed). RedisStore bounds every operation by session.redis_timeout as a whole; the socket
# timeouts default to the same value so a dead socket is noticed no later than that. Only a dropped
# connection is retried (once): a pooled connection that died with a Redis restart or a Sentinel failover
# gets one fresh try. A timeout is not retried: a hung Redis would otherwise double the wait, and the
# command may still run later, so retrying it would only queue a second copy.
_RETRIES = 1
_HEALTH_CHECK_INTERVAL = 30


def _retry() -> Retry:
    backoff = ExponentialWithJitterBackoff(base=0.05, cap=0.5)
    return Retry(backoff, retries=_RETRIES, supported_errors=(ConnectionDropped,))


def _connection_kwargs(target: RedisTarget, settings: SessionSettings) -> dict[str, Any]:
    password = settings.redis_password.get_secret_value() if settings.redis_password else None
    kwargs: dict[str, Any] = {
        "username": target.username or settings.redis_username,
        "password": target.password or password,
        "socket_timeout": target.socket_timeout or settings.redis_timeout,
        "socket_connect_timeout": target.socket_connect_timeout or settings.redis_timeout,
        "health_check_interval": _HEALTH_CHECK_INTERVAL,
        "retry": _retry(),
    }
    if target.tls:
        kwargs.update(ssl=True, **target.ssl)
    return kwargs


def _sentinel(target: RedisTarget, kwargs: dict[str, Any]) -> Sentinel:
    sentinel_kwargs = {name: value for name, value in kwargs.items() if name.startswith(("socket_", "ssl"))}
    sentinel_kwargs.update(username=target.sentinel_username, password=target.sentinel_password, retry=_retry())
    return Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)


@contextlib.asynccontextmanager
async def redis_client(settings: SessionSettings) -> AsyncIterator[RedisClient]:
    """The client for session.redis_url, closed (with any sentinel connections) on exit."""
    target = settings.redis_target
    if target is None:
        raise ValueError("session.redis_url is not set")  # config requires it with store: redis
    kwargs = _connection_kwargs(target, settings)
    if target.mode == "cluster":
        cluster = RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in target.hosts], **kwargs)
        # Discover the slots now, before requests run concurrently: commands racing redis-py's lazy first
        # initialize() break each other's new connections (redis-py 8.1). Unreachable now: ping says so,
        # the first command initializes later (while /readyz fails, that is the probe's ping, alone).
        with contextlib.suppress(RedisError, RedisClusterException):
            await cluster.initialize()
        try:
            yield cluster
        finally:
            await cluster.aclose()
    elif target.mode == "sentinel":
        sentinel = _sentinel(target, kwargs)
        master = sentinel.master_for(target.service_name or "", db=target.db, **kwargs)
        try:
            yield master
        finally:
            await master.aclose()
            await sentinel.aclose()
    else:
        where = {"unix_socket_path": target.unix_path} if target.unix_path else \
            {"host": target.hosts[0][0], "port": target.hosts[0][1]}
        redis = Redis(db=target.db, **where, **kwargs)
        try:
            yield redis
        finally:
            await redis.aclose()
