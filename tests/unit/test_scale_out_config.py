"""Scale-out settings, no sockets: Redis URL parsing (one node, Sentinel, Cluster, TLS, ACL), the
session.redis_* rules, `workers`, and the clients gateway.session.connect builds from them.

Every rule test names the key path and a fragment of the reason; each valid counterpart keeps the
rule from being over-broad. No reason may carry the URL's password.
"""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from gateway.config import Settings
from gateway.config.redis_url import RedisTarget, has_hash_tag, parse_redis_url
from gateway.session.connect import redis_client
from tests.unit.test_config import assert_problem, load, merged, problems_of

SECRET = "hunter2-secret"  # noqa: S105 - must never appear in a reason

# --- parsing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://127.0.0.1:6379/0", RedisTarget(mode="node", tls=False, hosts=(("127.0.0.1", 6379),))),
    ("redis://redis.internal", RedisTarget(mode="node", tls=False, hosts=(("redis.internal", 6379),))),
    ("redis://[::1]:6380/3", RedisTarget(mode="node", tls=False, hosts=(("::1", 6380),), db=3)),
    ("REDISS://alice:p%40ss%2Fw%3A%2B@h:6380/2?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
     "&ssl_check_hostname=false&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&socket_timeout=0.5",
     RedisTarget(mode="node", tls=True, hosts=(("h", 6380),), db=2, username="alice", password="p@ss/w:+",
                 socket_timeout=0.5, ssl={"ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required",
                                          "ssl_check_hostname": False, "ssl_certfile": "/c.pem",
                                          "ssl_keyfile": "/k.pem"})),
    ("redis://:only-a-password@h", RedisTarget(mode="node", tls=False, hosts=(("h", 6379),),
                                               password="only-a-password")),
    ("unix:///run/redis/redis.sock?db=4", RedisTarget(mode="node", tls=False, unix_path="/run/redis/redis.sock",
                                                      db=4)),
    ("unix://u:pw@/run/redis.sock", RedisTarget(mode="node", tls=False, unix_path="/run/redis.sock",
                                                username="u", password="pw")),
    ("redis+sentinel://s1,s2:26380,[::1]/mymaster",
     RedisTarget(mode="sentinel", tls=False, hosts=(("s1", 26379), ("s2", 26380), ("::1", 26379)),
                 service_name="mymaster")),
    ("rediss+sentinel://:pw@s1:26379/my%20master/5?sentinel_username=sen&sentinel_password=a+b%26c",
     RedisTarget(mode="sentinel", tls=True, hosts=(("s1", 26379),), service_name="my master", db=5,
                 password="pw", sentinel_username="sen", sentinel_password="a+b&c")),
    ("redis+cluster://n1:7000,n2:7001/",
     RedisTarget(mode="cluster", tls=False, hosts=(("n1", 7000), ("n2", 7001)))),
    ("rediss+cluster://u:pw@n1/0?socket_connect_timeout=3",
     RedisTarget(mode="cluster", tls=True, hosts=(("n1", 6379),), username="u", password="pw",
                 socket_connect_timeout=3.0)),
])
def test_parse(url: str, expected: RedisTarget) -> None:
    assert parse_redis_url(url) == expected
    assert expected.password is None or expected.password not in repr(parse_redis_url(url))


@pytest.mark.parametrize(("url", "fragment"), [
    (f"http://:{SECRET}@h:6379", "must be a redis://, rediss://, unix://, redis+sentinel://"),
    (f"{SECRET}@h:6379", "must be a redis://"),
    (f"sentinel://:{SECRET}@h/m", "must be a redis://"),
    (f"redis://:{SECRET}@h1:6379,h2:6379/0", "use redis+sentinel:// or redis+cluster://"),
    (f"redis+sentinel://:{SECRET}@h1:26379", "needs the Sentinel service name as its path"),
    ("redis+sentinel://h1:26379/", "needs the Sentinel service name"),
    ("redis+sentinel://h1/m/x", "database that is not a number"),
    (f"redis+cluster://:{SECRET}@h1:7000/1", "Redis Cluster has only database 0"),
    ("redis+cluster://h1?db=2", "Redis Cluster has only database 0"),
    (f"redis://:{SECRET}@h:99999/0", "invalid port"),
    ("redis://h:port/0", "invalid port"),
    ("redis://:pw@/0", "needs a host"),
    ("redis://h1,/0", "needs a host"),
    ("redis://::1:6379", "IPv6 host without brackets"),
    ("redis://[::1/0", "without its ']'"),
    ("redis://[not-v6]:1/0", "not an IPv6 address"),
    ("redis://h/zero", "database that is not a number"),
    ("redis://h/1?db=2", "gives the database twice"),
    (f"redis://h/0?password={SECRET}", "unknown option 'password'"),
    ("redis://h/0?ssl_ca_certs=/ca.pem", "option ssl_ca_certs needs TLS"),
    ("redis://h/0?sentinel_password=x", "only for redis+sentinel://"),
    ("rediss://h/0?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of required, optional, none"),
    ("rediss://h/0?ssl_check_hostname=perhaps", "ssl_check_hostname must be true or false"),
    ("rediss://h/0?ssl_keyfile=/k.pem", "ssl_keyfile needs ssl_certfile"),
    ("redis://h/0?socket_timeout=0", "socket_timeout must be greater than zero"),
    ("redis://h/0?socket_timeout=soon", "socket_timeout must be a number of seconds"),
    ("redis://h/0?db=1&db=1", "gives option db twice"),
    ("redis://h/0?db=", "option db has no value"),
    ("redis://h/0?verbose", "malformed query string"),
    (f"redis://:{SECRET}@h/0#frag", "must not have a #fragment"),
    ("unix://localhost/run/redis.sock", "takes no host"),
    ("unix://", "needs the socket's absolute path"),
])
def test_parse_rejects(url: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_redis_url(url)
    assert fragment in str(info.value)
    assert SECRET not in str(info.value)


def test_hash_tag() -> None:
    assert has_hash_tag("{gw}:") and has_hash_tag("app:{gw}:") and has_hash_tag("{a}{b}")
    assert not has_hash_tag("gw:") and not has_hash_tag("{}gw:") and not has_hash_tag("gw}{") \
        and not has_hash_tag("{gw")


# --- config rules ------------------------------------------------------------------------------


def session(**keys: Any) -> dict[str, Any]:
    return merged({"session": keys})


@pytest.mark.parametrize(("raw", "path", "fragment"), [
    (session(redis_url=f"ftp://:{SECRET}@h"), "session.redis_url", "must be a redis://"),
    (session(redis_url=f"redis+sentinel://:{SECRET}@h:26379"), "session.redis_url",
     "needs the Sentinel service name"),
    (session(redis_url="redis+cluster://h:7000/"), "session.key_prefix", "must contain a hash tag such as "
                                                                         "{oidc-gateway}:"),
    (session(redis_url="redis+cluster://h:7000/", key_prefix="{}gw:"), "session.key_prefix", "hash tag"),
    (session(redis_url="redis://alice@h/0", redis_username="bob"), "session.redis_username",
     "redis_url already carries a user name"),
    (session(redis_url=f"redis://:{SECRET}@h/0", redis_password="other"), "session.redis_password",
     "redis_url already carries a password"),
    (session(redis_username=""), "session.redis_username", "must not be empty"),
    (session(redis_password=""), "session.redis_password", "must not be empty"),
    (merged({"workers": 2, "session": {"store": "memory"}}), "session.store",
     "must be redis with workers: 2: each worker process has its own memory"),
    (merged({"workers": 0}), "workers", "must be from 1 to 64"),
    (merged({"workers": 65}), "workers", "must be from 1 to 64"),
    (merged({"workers": "many"}), "workers", "must be a whole number"),
])
def test_rule(raw: dict[str, Any], path: str, fragment: str) -> None:
    problems = problems_of(raw)
    assert_problem(problems, path, fragment)
    assert all(SECRET not in reason for _, reason in problems)


@pytest.mark.parametrize("raw", [
    session(redis_url="redis+cluster://h:7000/", key_prefix="{oidc-gateway}:"),
    session(redis_url="rediss+cluster://h:7000,h:7001/?ssl_ca_certs=/ca.pem", key_prefix="app:{gw}:"),
    session(redis_url="redis+sentinel://h:26379/mymaster/1", redis_username="alice", redis_password="pw"),
    session(redis_url="redis://alice@h/0", redis_password="pw"),  # user in the URL, password in its key
    session(redis_url="unix:///run/redis.sock"),
    merged({"workers": 64}),
    merged({"workers": 2}),  # redis store (the minimal file's)
    merged({"workers": 1, "session": {"store": "memory"}}),
])
def test_valid_counterparts(raw: dict[str, Any]) -> None:
    load(raw)


def test_defaults() -> None:
    settings = load(merged({}))
    assert settings.workers == 1
    assert settings.session.redis_username is None
    assert settings.session.redis_target == RedisTarget(mode="node", tls=False, hosts=(("127.0.0.1", 6379),))


def test_redis_password_file_twin(tmp_path: Any) -> None:
    (tmp_path / "pw").write_text(SECRET + "\n")
    settings = load(session(redis_password_file="pw", redis_username="alice"), base_dir=tmp_path)
    assert settings.session.redis_password is not None
    assert settings.session.redis_password.get_secret_value() == SECRET


# --- the clients built from them (constructed only: nothing connects) --------------------------


def settings_with(**keys: Any) -> Settings:
    return load(session(**keys))


async def test_rediss_builds_a_verifying_tls_client() -> None:
    settings = settings_with(redis_url="rediss://u:pw@h:6380/2?ssl_ca_certs=/ca.pem")
    async with redis_client(settings.session) as client:
        assert isinstance(client, Redis)
        pool = client.connection_pool
        assert pool.connection_class is SSLConnection
        kwargs = pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("h", 6380, 2)
        assert (kwargs["username"], kwargs["password"], kwargs["ssl_ca_certs"]) == ("u", "pw", "/ca.pem")
        assert kwargs["ssl_cert_reqs"] == "required"  # redis-py's default, not weakened
        assert client.get_retry() is not None and client.get_retry().get_retries() == 1


async def test_unix_socket_client_with_credentials_from_keys() -> None:
    settings = settings_with(redis_url="unix:///run/redis.sock?db=3", redis_username="alice", redis_password="pw")
    async with redis_client(settings.session) as client:
        assert isinstance(client, Redis)
        assert client.connection_pool.connection_class is UnixDomainSocketConnection
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["path"], kwargs["db"], kwargs["username"], kwargs["password"]) == (
            "/run/redis.sock", 3, "alice", "pw")


async def test_sentinel_client_asks_for_the_named_master_over_tls() -> None:
    settings = settings_with(redis_url="rediss+sentinel://:pw@s1:26379,s2:26380/mymaster/1?sentinel_password=sp")
    async with redis_client(settings.session) as client:
        pool = client.connection_pool
        assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "mymaster"
        assert pool.connection_class is SentinelManagedSSLConnection
        assert (pool.connection_kwargs["db"], pool.connection_kwargs["password"]) == (1, "pw")
        sentinels = pool.sentinel_manager.sentinels
        assert [(s.connection_pool.connection_kwargs["host"], s.connection_pool.connection_kwargs["port"])
                for s in sentinels] == [("s1", 26379), ("s2", 26380)]
        assert {s.connection_pool.connection_kwargs["password"] for s in sentinels} == {"sp"}
        assert all(s.connection_pool.connection_class is SSLConnection for s in sentinels)
