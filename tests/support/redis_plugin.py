"""pytest plugin: a Redis Cluster and a Sentinel-managed Redis, each started once per test session on
first use (and killed at its end), for the tests that run the store through those URLs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.redis_servers import REDIS_CLI, REDIS_SERVER, RedisFarm, wait_for

__all__ = ["SentinelSetup", "redis_cluster_fixture", "redis_sentinel_fixture"]

MASTER_PASSWORD = "master-pw"  # noqa: S105 - test servers only
SENTINEL_PASSWORD = "sentinel+pw"  # noqa: S105 - a '+' that a query-string parser must not turn into a space
SERVICE = "gateway-master"


def _require_binaries() -> None:
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server/redis-cli are not installed (scripts/setup installs the Debian packages "
                    "redis-server and redis-tools)")


@pytest.fixture(scope="session", name="redis_cluster")
def redis_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a 3-master Redis Cluster: redis+cluster://127.0.0.1:p1,127.0.0.1:p2/ (p3 is discovered)."""
    _require_binaries()
    farm = RedisFarm(tmp_path_factory.mktemp("redis-cluster"))
    try:
        ports = farm.cluster(3)
        yield f"redis+cluster://127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}/"
    finally:
        farm.stop()


@dataclass(frozen=True)
class SentinelSetup:
    url: str  # credentials for the master and for the sentinel included
    master_port: int
    sentinel_port: int


@pytest.fixture(scope="session", name="redis_sentinel")
def redis_sentinel_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A password-protected master and one password-protected sentinel monitoring it."""
    _require_binaries()
    import redis

    farm = RedisFarm(tmp_path_factory.mktemp("redis-sentinel"))
    try:
        master = farm.start("master", "--requirepass", MASTER_PASSWORD)
        sentinel = farm.start("sentinel", sentinel_conf=(
            f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
            f"sentinel auth-pass {SERVICE} {MASTER_PASSWORD}\n"
            f"sentinel down-after-milliseconds {SERVICE} 60000\n"
            f"requirepass {SENTINEL_PASSWORD}\n"))

        def knows_master() -> bool:
            with redis.Redis(port=sentinel, password=SENTINEL_PASSWORD) as client:
                return client.sentinel_get_master_addr_by_name(SERVICE) == (b"127.0.0.1", master)

        wait_for(knows_master, "the sentinel reporting its master")
        yield SentinelSetup(
            url=f"redis+sentinel://:{MASTER_PASSWORD}@127.0.0.1:{sentinel}/{SERVICE}"
                f"?sentinel_password={SENTINEL_PASSWORD}",
            master_port=master, sentinel_port=sentinel)
    finally:
        farm.stop()
