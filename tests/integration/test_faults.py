"""Faults against real processes: `python -m gateway`, a redis-server of its own, the real OP.

Nothing is mocked. Redis outages come in two kinds:

* **paused** (SIGSTOP, then SIGCONT): the process and its data stay, every socket hangs, so
  session.redis_timeout (the store's per-operation deadline) is what bounds a request. This is how an
  outage that preserves data is simulated with a Redis started without persistence
  (`--save "" --appendonly no`).
* **killed and restarted on the same port** with `--appendonly yes --appendfsync always`: connections
  are refused during the outage and every pooled connection is dead afterwards; the AOF keeps the data.

Upstreams are aiohttp servers in the test process; `/gate` holds its answer until the test releases
it, so "requests are in flight" is a fact the test observes, not a timing guess. Connections from the
gateway to an upstream are counted in /proc/net/tcp (Linux).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import COOKIE_SECRET, GatewayServer
from tests.fakes.echo import echo_app
from tests.integration.test_bearer import jwt_access_token
from tests.support.op import browser_login
from tests.support.redis_servers import RedisFarm, free_port, needs_redis_server

pytestmark = [needs_redis_server,
              pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")]

DEADLINE = 20.0
COOKIE = "_oidc_gateway"
JSON = {"Accept": "application/json"}
READ_TIMEOUT = 1.0  # the upstreams' read_timeout in these tests
CACHE_TTL = 2.0  # session.local_cache_ttl, the default
REDIS_TIMEOUT = 0.5  # session.redis_timeout in the paused-Redis test (default 1 s)


# --- the pieces ----------------------------------------------------------------------------------


class Gate:
    """An upstream whose /gate answers only once `release` is set; `arrived` counts waiting requests."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def _gate(self, request: web.Request) -> web.Response:
        self.arrived += 1
        await self.release.wait()
        return web.Response(text=f"released {request.headers.get('X-Auth-Request-User', '-')}")

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._gate)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return str(self.server.make_url("")).rstrip("/")


@dataclass
class Setup:
    tmp_path: Path
    op: Any
    farm: RedisFarm
    redis_port: int
    echo_url: str
    gate: Gate
    gate_url: str
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, redis_query: str = "", **session: str) -> Path:
        path = self.tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({
            "listen": f"127.0.0.1:{self.port}", "public_url": self.base, "shutdown_timeout": "15s",
            "oidc": {"issuer": self.op.issuer, "client_id": "gateway", "client_secret": self.op.clients["gateway"]},
            "session": {"store": "redis", "redis_url": f"redis://127.0.0.1:{self.redis_port}/0{redis_query}",
                        "key_prefix": "faults:", "cookie_secret": COOKIE_SECRET, "cookie_secure": False,
                        **session},
            "access": {"bearer": {"audiences": ["urn:gateway:api"]}},
            "upstreams": [
                {"path": "/gate", "url": self.gate_url, "read_timeout": "30s"},
                {"path": "/down", "url": f"http://127.0.0.1:{free_port()}", "connect_timeout": "1s"},
                {"path": "/", "url": self.echo_url, "read_timeout": f"{READ_TIMEOUT}s"},
            ],
        }))
        return path

    def start_gateway(self, redis_query: str = "", **session: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(self.config(redis_query, **session))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[RedisFarm]:
    farm = RedisFarm(tmp_path)
    yield farm
    for proc in farm.procs:  # a paused server would ignore nothing but SIGKILL; resume it anyway
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
    farm.stop()


@pytest.fixture
async def setup(tmp_path: Path, op: Any, farm: RedisFarm) -> AsyncIterator[Setup]:
    redis_port = farm.start("faults", "--appendonly", "yes", "--appendfsync", "always")
    echo = GatewayServer(echo_app(), host="127.0.0.1")
    await echo.start_server()
    gate = Gate()
    gate_url = await gate.start()
    yield Setup(tmp_path, op, farm, redis_port, str(echo.make_url("")).rstrip("/"), gate, gate_url, free_port())
    gate.release.set()
    assert gate.server is not None
    await gate.server.close()
    await echo.close()


async def eventually(check: Any, proc: subprocess.Popen[bytes], what: str, timeout: float = DEADLINE) -> None:
    """Bounded polling of a condition in another process (there is no event to await)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the gateway exited ({proc.returncode}) waiting for {what}"
        try:
            if await check():
                return
        except (aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.05)  # poll interval
    raise AssertionError(f"timed out waiting for {what}")


async def status(http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    async with http.get(url, headers={**JSON, **(headers or {})}, allow_redirects=False) as resp:
        return resp.status, await resp.text()


async def serving(http: aiohttp.ClientSession, base: str) -> bool:
    return (await status(http, f"{base}/healthz"))[0] == 200


async def login(base: str) -> str:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        result = await browser_login(browser, f"{base}/who")
        assert result.status == 200, result.body
        return next(c.value for c in browser.cookie_jar if c.key == COOKIE)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=DEADLINE)


def upstream_connections(upstream_port: int) -> int:
    """ESTABLISHED client-side IPv4 sockets on this machine whose peer is 127.0.0.1:upstream_port."""
    remote = f"0100007F:{upstream_port:04X}"
    return sum(1 for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
               if line.split()[2] == remote and line.split()[3] == "01")


# --- Redis stops under traffic -------------------------------------------------------------------


async def _outage_under_traffic(s: Setup, proc: subprocess.Popen[bytes], cookie: str, token: str,
                                bound: float) -> None:
    """During the outage: the session route fails closed within `bound` seconds, Bearer keeps working."""
    async with aiohttp.ClientSession() as http:
        session = {"Cookie": f"{COOKIE}={cookie}"}
        bearer = {"Authorization": f"Bearer {token}"}

        async def timed(headers: dict[str, str], path: str) -> tuple[int, str, float]:
            started = time.monotonic()
            code, body = await status(http, f"{s.base}{path}", headers)
            return code, body, time.monotonic() - started

        # session.local_cache_ttl (default 2 s) serves a session read moments before the outage from
        # memory, never longer: within that window a request may pass, after it every one fails closed.
        outage = time.monotonic()

        async def refused() -> bool:
            code, body = await status(http, f"{s.base}/first", session)
            assert code in (200, 503), (code, body)
            return code == 503
        await eventually(refused, proc, "the first 503", timeout=CACHE_TTL + bound)
        assert time.monotonic() - outage < CACHE_TTL + bound
        print(f"first 503 {time.monotonic() - outage:.2f} s after the outage began")  # noqa: T201 - figures (-s)
        results = await asyncio.gather(*(timed(session, f"/s{i}") for i in range(10)),
                                       *(timed(bearer, f"/b{i}") for i in range(10)))
        for code, body, took in results[:10]:
            assert code == 503 and '"store_unavailable"' in body, (code, body)  # never let through
            assert took < bound, took
        print(f"10 concurrent session requests: 503 in {max(took for *_, took in results[:10]):.2f} s at most")  # noqa: T201
        for code, body, _ in results[10:]:
            assert code == 200 and '"path": "/b' in body, (code, body)
        started = time.monotonic()  # a browser gets the gateway's own error page, as fast
        async with http.get(f"{s.base}/page", headers={**session, "Accept": "text/html"}) as resp:
            page = await resp.text()
            assert resp.status == 503 and resp.content_type == "text/html", (resp.status, page)
            assert "store_unavailable" in page and time.monotonic() - started < bound
        assert proc.poll() is None and await serving(http, s.base)


async def test_redis_paused_fails_closed_fast_and_recovers_with_sessions(setup: Setup) -> None:
    """SIGSTOP: sockets hang; session.redis_timeout bounds every request (it took 4-8 s with a 2 s socket
    timeout retried once, before the deadline existed)."""
    s = setup
    proc = s.start_gateway(redis_timeout=f"{REDIS_TIMEOUT}s")
    try:
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: serving(http, s.base), proc, "the gateway to serve")
        cookie = await login(s.base)
        token = await jwt_access_token(s.op)
        redis_proc = s.farm.procs[0]
        os.kill(redis_proc.pid, signal.SIGSTOP)
        try:
            await _outage_under_traffic(s, proc, cookie, token, bound=REDIS_TIMEOUT + 1.0)
        finally:
            os.kill(redis_proc.pid, signal.SIGCONT)
        async with aiohttp.ClientSession() as http:
            async def works() -> bool:
                return (await status(http, f"{s.base}/after", {"Cookie": f"{COOKIE}={cookie}"}))[0] == 200
            await eventually(works, proc, "the session created before the outage to work again", timeout=10)
            code, body = await status(http, f"{s.base}/after", {"Cookie": f"{COOKIE}={cookie}"})
            assert code == 200 and '"x-auth-request-user"' in body.lower()
    finally:
        stop(proc)
    assert b"Traceback" not in proc.communicate()[1]


async def test_gateway_started_while_redis_hangs_serves_503_then_recovers(setup: Setup) -> None:
    """Start-up does not wait for a hung Redis: /healthz 200, /readyz and logins 503 within redis_timeout;
    after SIGCONT logins work and /readyz turns 200 without a restart."""
    s = setup
    redis_proc = s.farm.procs[0]
    os.kill(redis_proc.pid, signal.SIGSTOP)
    proc = s.start_gateway(redis_timeout=f"{REDIS_TIMEOUT}s")
    try:
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: serving(http, s.base), proc, "the gateway to serve")
            for path, code in (("/readyz", '"session_store"'), ("/oauth2/start", '"store_unavailable"')):
                started = time.monotonic()
                answer = await status(http, f"{s.base}{path}")
                assert answer[0] == 503 and code in answer[1], answer
                assert time.monotonic() - started < REDIS_TIMEOUT + 1.0
        os.kill(redis_proc.pid, signal.SIGCONT)
        cookie = await login(s.base)
        async with aiohttp.ClientSession() as http:
            code, body = await status(http, f"{s.base}/after", {"Cookie": f"{COOKIE}={cookie}"})
            assert code == 200 and '"path": "/after"' in body

            async def ready() -> bool:
                return (await status(http, f"{s.base}/readyz"))[0] == 200
            await eventually(ready, proc, "/readyz 200 after SIGCONT", timeout=5)
    finally:
        os.kill(redis_proc.pid, signal.SIGCONT)
        stop(proc)
    assert b"Traceback" not in proc.communicate()[1]


async def test_redis_killed_and_restarted_on_the_same_port(setup: Setup) -> None:
    """Connection refused during the outage (default timeouts); the AOF keeps the session across it."""
    s = setup
    proc = s.start_gateway()
    try:
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: serving(http, s.base), proc, "the gateway to serve")
        cookie = await login(s.base)
        token = await jwt_access_token(s.op)
        s.farm.stop()  # SIGKILL: no shutdown save, only what the AOF (fsync always) already has
        await _outage_under_traffic(s, proc, cookie, token, bound=2.0)
        async with aiohttp.ClientSession() as http:
            ready = await status(http, f"{s.base}/readyz")
            assert ready[0] == 503 and "session_store" in ready[1]
            s.farm.start("faults", "--appendonly", "yes", "--appendfsync", "always", port=s.redis_port)

            async def works() -> bool:
                return (await status(http, f"{s.base}/after", {"Cookie": f"{COOKIE}={cookie}"}))[0] == 200
            await eventually(works, proc, "recovery without a restart of the gateway", timeout=10)
            assert (await status(http, f"{s.base}/readyz"))[0] == 200
    finally:
        stop(proc)
    assert b"Traceback" not in proc.communicate()[1]


# --- Upstream down, slow, closing mid-response ---------------------------------------------------


async def test_upstream_faults_are_bounded_leak_nothing_and_the_process_keeps_serving(setup: Setup) -> None:
    s = setup
    proc = s.start_gateway()
    echo_port = int(s.echo_url.rpartition(":")[2])
    try:
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: serving(http, s.base), proc, "the gateway to serve")
        cookie = await login(s.base)
        token = await jwt_access_token(s.op)
        secrets = (cookie, token, token.split(".")[1])
        async with aiohttp.ClientSession() as http:
            for credentials in ({"Cookie": f"{COOKIE}={cookie}"}, {"Authorization": f"Bearer {token}"}):
                for accept in ("application/json", "text/html"):
                    headers = {**credentials, "Accept": accept}
                    started = time.monotonic()
                    async with http.get(f"{s.base}/down/x", headers=headers) as resp:
                        down = (resp.status, await resp.text())
                    assert down[0] == 502 and time.monotonic() - started < 2.0
                    started = time.monotonic()
                    async with http.get(f"{s.base}/__slow?delay=30", headers=headers) as resp:
                        slow = (resp.status, await resp.text())
                    assert slow[0] == 504 and time.monotonic() - started < READ_TIMEOUT + 1.5
                    for body in (down[1], slow[1]):
                        assert not any(secret in body for secret in secrets)
                        assert "Traceback" not in body

            # Twenty timeouts at once: each held an upstream connection that must be closed, not kept.
            session = {"Cookie": f"{COOKIE}={cookie}"}
            slow = await asyncio.gather(*(status(http, f"{s.base}/__slow?delay=30", session) for _ in range(20)))
            assert {code for code, _ in slow} == {504}
            aborted = await asyncio.gather(*(http.get(f"{s.base}/__abort", headers=session) for _ in range(5)))
            for resp in aborted:
                with pytest.raises(aiohttp.ClientPayloadError):
                    await asyncio.wait_for(resp.read(), DEADLINE)

            async def no_leak() -> bool:
                return upstream_connections(echo_port) <= 1  # at most one idle keep-alive may remain
            await eventually(no_leak, proc, f"upstream connections to close ({upstream_connections(echo_port)})",
                             timeout=5)
            code, body = await status(http, f"{s.base}/next", session)
            assert code == 200 and '"path": "/next"' in body
            assert proc.poll() is None
    finally:
        stop(proc)
    assert b"Traceback" not in proc.communicate()[1]


# --- Gateway restarted under load ----------------------------------------------------------------


async def test_sigterm_under_load_drains_and_the_next_process_keeps_the_sessions(setup: Setup) -> None:
    s = setup
    proc = s.start_gateway()
    second: subprocess.Popen[bytes] | None = None
    try:
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: serving(http, s.base), proc, "the gateway to serve")
        cookies = [await login(s.base) for _ in range(2)]
        async with aiohttp.ClientSession() as http:
            in_flight = [asyncio.create_task(status(http, f"{s.base}/gate/{i}", {"Cookie": f"{COOKIE}={c}"}))
                         for i, c in enumerate(cookies * 3)]

            async def all_arrived() -> bool:
                return s.gate.arrived == len(in_flight)
            await eventually(all_arrived, proc, "every request to reach the upstream")
            proc.send_signal(signal.SIGTERM)

            async def refuses() -> bool:
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", s.port)
                except OSError:
                    return True
                writer.close()
                return False
            await eventually(refuses, proc, "the listener to close")
            assert proc.poll() is None and not any(t.done() for t in in_flight)  # draining
            s.gate.release.set()
            for code, body in await asyncio.wait_for(asyncio.gather(*in_flight), DEADLINE):
                assert (code, body) == (200, "released alice")
        assert proc.wait(timeout=DEADLINE) == 0

        second = s.start_gateway()
        async with aiohttp.ClientSession() as http:
            await eventually(lambda: serving(http, s.base), second, "the new gateway to serve")
            for cookie in cookies:
                code, body = await status(http, f"{s.base}/again", {"Cookie": f"{COOKIE}={cookie}"})
                assert code == 200 and '"path": "/again"' in body
    finally:
        stop(proc)
        if second is not None:
            stop(second)
    assert b"Traceback" not in proc.communicate()[1]
