"""Signals to a real `python -m gateway` process: SIGHUP reloads, SIGTERM drains (bounded).

The upstreams are aiohttp servers in the test process; `/slow` holds its answer until the test
releases it, so "a request is in flight" is a fact the test controls rather than a timing guess.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import COOKIE_SECRET, REDIS_URL, free_port

DEADLINE = 20.0


class Upstream:
    """Answers its name; /slow waits for `release` (and sets `arrived` when it gets the request)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def _who(self, request: web.Request) -> web.Response:
        return web.Response(text=self.name)

    async def _slow(self, request: web.Request) -> web.Response:
        self.arrived.set()
        await self.release.wait()
        return web.Response(text=f"{self.name}-slow")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/who", self._who)
        app.router.add_get("/slow", self._slow)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[[str], Awaitable[tuple[Upstream, str]]]]:
    started: list[Upstream] = []

    async def make(name: str) -> tuple[Upstream, str]:
        upstream = Upstream(name)
        started.append(upstream)
        return upstream, await upstream.start()

    yield make
    for upstream in started:
        upstream.release.set()
        assert upstream.server is not None
        await upstream.server.close()


def write_config(path: Path, op: Any, port: int, upstream: str, **extra: Any) -> Path:
    config = {
        "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}", "log_format": "json",
        "oidc": {"issuer": op.issuer, "client_id": "gateway", "client_secret": op.clients["gateway"]},
        "session": {"store": "memory", "cookie_secret": COOKIE_SECRET, "cookie_secure": False},
        "upstreams": [{"path": "/", "url": upstream}],
        "access": {"public_paths": ["^/"]},  # no login needed: these tests are about the process
        **extra,
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, stderr: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=stderr)


async def eventually(check: Callable[[], Awaitable[bool]], proc: subprocess.Popen[bytes], what: str) -> None:
    """Bounded polling of a readiness condition (the gateway is another process: no event to await)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        assert proc.poll() is None or what == "exit", f"the gateway exited ({proc.returncode}) waiting for {what}"
        try:
            if await check():
                return
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def fetch(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.text()


async def answers(http: aiohttp.ClientSession, url: str, expected: str) -> bool:
    return await fetch(http, url) == (200, expected)


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return True
    writer.close()
    return False


def counting_connections(counter: list[int]) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def created(*_: Any) -> None:
        counter.append(1)

    trace.on_connection_create_end.append(created)
    return trace


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


async def test_sighup_moves_the_next_request_to_the_new_upstream_while_one_in_flight_completes(
        tmp_path: Path, op: Any, upstreams: Any) -> None:
    a, a_url = await upstreams("A")
    _, b_url = await upstreams("B")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = write_config(tmp_path / "config.yaml", op, port, a_url)
    log = (tmp_path / "stderr.log").open("wb")
    proc = start(config, log)
    connections: list[int] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1),
                                         trace_configs=[counting_connections(connections)]) as keepalive, \
                aiohttp.ClientSession() as other:
            await eventually(lambda: answers(other, f"{base}/who", "A"), proc, "the gateway to serve")
            assert await fetch(keepalive, f"{base}/who") == (200, "A")
            in_flight = asyncio.create_task(fetch(other, f"{base}/slow"))
            await asyncio.wait_for(a.arrived.wait(), DEADLINE)

            write_config(config, op, port, b_url)
            proc.send_signal(signal.SIGHUP)
            await eventually(lambda: answers(keepalive, f"{base}/who", "B"), proc, "the new upstream")
            assert not in_flight.done()
            a.release.set()
            assert await asyncio.wait_for(in_flight, DEADLINE) == (200, "A-slow")
            assert connections == [1]  # the keep-alive connection survived the reload

            config.write_text(config.read_text().replace("upstreams:", "upstreams: []\nx_unknown:"))
            proc.send_signal(signal.SIGHUP)

            async def rejected() -> bool:
                _, text = await fetch(other, f"{base}/metrics")
                return 'oidc_gateway_config_reloads_total{outcome="failure"} 1.0' in text

            await eventually(rejected, proc, "the invalid file to be rejected")
            assert await fetch(keepalive, f"{base}/who") == (200, "B")  # the old configuration stays
            _, metrics = await fetch(other, f"{base}/metrics")
            assert 'oidc_gateway_config_reloads_total{outcome="success"} 1.0' in metrics
    finally:
        assert stop(proc) == 0
        log.close()
    lines = [json.loads(line) for line in (tmp_path / "stderr.log").read_text().splitlines()]
    assert any(e["message"].startswith("configuration reloaded: 1 upstream") for e in lines)
    rejected_lines = [e for e in lines if e["message"].startswith("configuration reload rejected")]
    assert rejected_lines and "x_unknown" in rejected_lines[0]["message"]
    assert any(e["logger"] == "gateway.access" and e.get("request_id") for e in lines)


async def test_sigterm_drains_an_in_flight_request_then_exits_0(tmp_path: Path, op: Any, upstreams: Any) -> None:
    a, a_url = await upstreams("A")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(write_config(tmp_path / "config.yaml", op, port, a_url, shutdown_timeout="20s"), subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: answers(http, f"{base}/who", "A"), proc, "the gateway to serve")
            in_flight = asyncio.create_task(fetch(http, f"{base}/slow"))
            await asyncio.wait_for(a.arrived.wait(), DEADLINE)
            proc.send_signal(signal.SIGTERM)
            await eventually(lambda: refuses_connections(port), proc, "the listener to close")
            assert proc.poll() is None and not in_flight.done()  # draining: still waiting for /slow
            a.release.set()
            assert await asyncio.wait_for(in_flight, DEADLINE) == (200, "A-slow")
        assert proc.wait(timeout=DEADLINE) == 0
    finally:
        proc.kill() if proc.poll() is None else None
    assert b"Traceback" not in proc.communicate()[1]


async def test_sigterm_drain_is_bounded_by_shutdown_timeout(tmp_path: Path, op: Any, upstreams: Any) -> None:
    a, a_url = await upstreams("A")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = start(write_config(tmp_path / "config.yaml", op, port, a_url, shutdown_timeout="500ms"), subprocess.PIPE)
    try:
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: answers(http, f"{base}/who", "A"), proc, "the gateway to serve")
            in_flight = asyncio.create_task(fetch(http, f"{base}/slow"))  # never released
            await asyncio.wait_for(a.arrived.wait(), DEADLINE)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, DEADLINE) == 0
            assert time.monotonic() - signalled < 10  # 0.5s drain plus clean-up, not the upstream's 60s
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(in_flight, DEADLINE)
    finally:
        proc.kill() if proc.poll() is None else None


async def test_sighup_reaches_every_worker(tmp_path: Path, op: Any, upstreams: Any, redis_prefix: str) -> None:
    _, a_url = await upstreams("A")
    _, b_url = await upstreams("B")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    session = {"store": "redis", "redis_url": REDIS_URL, "key_prefix": redis_prefix,
               "cookie_secret": COOKIE_SECRET, "cookie_secure": False}
    config = write_config(tmp_path / "config.yaml", op, port, a_url, workers=2, session=session)
    proc = start(config, subprocess.DEVNULL)
    try:
        # A new connection per request, so the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
            await eventually(lambda: answers(http, f"{base}/who", "A"), proc, "the workers to serve")
            write_config(config, op, port, b_url, workers=2, session=session)
            os.kill(proc.pid, signal.SIGHUP)

            async def all_moved() -> bool:
                return all([await answers(http, f"{base}/who", "B") for _ in range(12)])

            await eventually(all_moved, proc, "every worker to use the new upstream")
            os.kill(proc.pid, signal.SIGHUP)  # a second one changes nothing and stops nothing
            assert all([await answers(http, f"{base}/who", "B") for _ in range(12)])
            assert proc.poll() is None
    finally:
        assert stop(proc) == 0
