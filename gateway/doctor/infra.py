"""The session store and upstream checks: Redis reachable, fast and writable; every upstream answering."""

from __future__ import annotations

import asyncio
import secrets
import statistics
import time

import aiohttp
from redis.exceptions import (
    AuthenticationError,
    NoPermissionError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
)

from gateway.config import Settings
from gateway.config.redis_url import RedisTarget
from gateway.doctor.findings import Finding, fail, ok, safe_url, warn
from gateway.session.connect import redis_client

__all__ = ["check_store", "check_upstreams"]

_SLOW_REDIS = 0.05  # seconds per round trip: every request reads its session, so this adds up
_MAX_UPSTREAM_WAIT = 10.0


def _where(target: RedisTarget) -> str:
    """Hosts and mode, never credentials."""
    if target.unix_path:
        return f"unix:{target.unix_path}"
    hosts = ",".join(f"{host}:{port}" for host, port in target.hosts)
    tls = " (TLS)" if target.tls else ""
    if target.mode == "sentinel":
        return f"sentinels {hosts}, service {target.service_name}{tls}"
    return f"{'cluster ' if target.mode == 'cluster' else ''}{hosts}{tls}"


async def _round_trips(settings: Settings) -> float:
    """The median PING time; then a SET and DEL of a short-lived key under the prefix (writable?)."""
    async with redis_client(settings.session) as redis:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            await redis.ping()
            times.append(time.perf_counter() - started)
        key = f"{settings.session.key_prefix}doctor:{secrets.token_hex(8)}"
        await redis.set(key, b"doctor", px=10_000)
        await redis.delete(key)
    return statistics.median(times)


async def check_store(settings: Settings, *, timeout: float) -> list[Finding]:
    session = settings.session
    if session.store == "memory":
        return [warn("session store", "store: memory keeps sessions in this process: they are lost on restart "
                                      "and not shared between replicas or workers",
                     "use store: redis with session.redis_url in production")]
    assert session.redis_target is not None  # config requires redis_url with store: redis
    where = _where(session.redis_target)
    check = "redis"
    try:
        async with asyncio.timeout(timeout):
            latency = await _round_trips(settings)
    except AuthenticationError:
        return [fail(check, f"{where} refused the credentials",
                     "check the user and password in session.redis_url, or redis_username / redis_password(_file)")]
    except NoPermissionError:
        return [fail(check, f"{where}: the Redis user may not run GET/SET/DEL on the key prefix",
                     f"grant the ACL user ~{session.key_prefix}* with +@read +@write +@scripting, and "
                     f"&{session.key_prefix}invalidate for the local session cache")]
    except ReadOnlyError:
        return [fail(check, f"{where} is a read-only replica",
                     "point session.redis_url at the master (or use redis+sentinel:// to follow failovers)")]
    except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:  # a cluster's is no RedisError
        return [fail(check, f"{where} unreachable ({type(exc).__name__})",
                     "check host and port in session.redis_url (rediss:// for TLS) and that this host may "
                     "reach Redis (network policy, firewall)")]
    text = f"{where} answered PING in {latency * 1000:.1f} ms; writes under {session.key_prefix!r} work"
    if latency > _SLOW_REDIS:
        return [warn(check, text, "every request reads its session: run Redis close to the gateway (same zone)")]
    return [ok(check, text)]


async def check_upstreams(http: aiohttp.ClientSession, settings: Settings) -> list[Finding]:
    findings: list[Finding] = []
    for i, upstream in enumerate(settings.upstreams):
        check = f"upstreams[{i}] {upstream.path}"
        where = safe_url(upstream.url)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=upstream.connect_timeout,
                                        sock_read=min(upstream.read_timeout, _MAX_UPSTREAM_WAIT))
        fix = (f"check upstreams[{i}].url and that the app listens there (in a Kubernetes sidecar: "
               "http://127.0.0.1:<the app container's port>)")
        started = time.perf_counter()
        try:
            async with http.get(upstream.url, timeout=timeout, allow_redirects=False) as resp:
                status = resp.status
        except TimeoutError:
            findings.append(fail(check, f"{where} did not answer in time", fix))
            continue
        except aiohttp.ClientError as exc:
            findings.append(fail(check, f"{where} unreachable ({type(exc).__name__})", fix))
            continue
        elapsed = (time.perf_counter() - started) * 1000
        findings.append(ok(check, f"{where} answered HTTP {status} in {elapsed:.0f} ms"))
    return findings
