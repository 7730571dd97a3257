"""Soak: many browser sessions against `python -m gateway`, the real OP and a redis-server, one Redis outage.

Loopback only and bounded in time (`--duration`, default 60 s). Every client logs in through the real
OP (tests/op), makes proxied requests, and now and then signs out and logs in again; access tokens live
`--token-ttl` seconds so sessions refresh all the time. A third into the run Redis goes away for
`--outage` seconds: `--fault pause` (default) stops it with SIGSTOP (sockets hang) and resumes it with
SIGCONT (data kept); `--fault restart` kills it (SIGKILL: connections refused, every pooled connection
dead) and starts a new one on the same port, which reloads the data from its append-only file.
Reported: outcomes inside and outside the outage window (errors outside must be 0), sessions lost (a
logged-in cookie refused outside the window: must be 0), refreshes the OP granted, and the gateway's
RSS after warm-up and at the end. With `--log`, the gateway's log (warnings and errors, JSON lines with
the request id that the error examples name) is kept.

    scripts/soak [--duration 60] [--clients 20] [--outage 5] [--token-ttl 8] [--fault pause|restart]
                 [--log gateway.log]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
import yaml

from tests.conftest import COOKIE_SECRET, GatewayServer
from tests.fakes.echo import echo_app
from tests.support.op import TestOP, browser_login
from tests.support.redis_servers import RedisFarm, free_port

COOKIE = "_oidc_gateway"
GRACE = 3.0  # after SIGCONT: requests that began in the pause may still end (each within session.redis_timeout)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Soak:
    def __init__(self, base: str, deadline: float) -> None:
        self.base = base
        self.deadline = deadline
        self.window: tuple[float, float] = (float("inf"), float("inf"))
        self.inside: Counter[str] = Counter()
        self.outside: Counter[str] = Counter()
        self.lost = 0
        self.examples: list[str] = []

    def record(self, started: float, outcome: str, request_id: str = "") -> None:
        begin, end = self.window
        ended = time.monotonic()
        counter = self.inside if started <= end and ended >= begin else self.outside
        counter[outcome] += 1
        if counter is self.outside and not outcome.startswith("ok") and len(self.examples) < 10:
            # When (relative to the pause) and which request: the gateway log has the same request id.
            since = "" if begin == float("inf") else f" at {started - begin:+.2f}s..{ended - begin:+.2f}s of the pause"
            self.examples.append(f"{outcome}{since} request_id={request_id or '-'}")

    async def login(self, browser: aiohttp.ClientSession, user: str) -> bool:
        started = time.monotonic()
        try:
            result = await browser_login(browser, f"{self.base}/home", user, f"{user}-password")
            outcome = "ok login" if result.status == 200 else f"login {result.status}"
        except (TimeoutError, aiohttp.ClientError, RuntimeError) as exc:
            outcome = f"login {type(exc).__name__}"
        self.record(started, outcome)
        return outcome == "ok login"

    async def client(self, n: int) -> None:
        user = random.choice(["alice", "bob"])  # noqa: S311 - load mix, not security
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), timeout=timeout) as browser:
            logged_in = await self.login(browser, user)
            while time.monotonic() < self.deadline:
                if not logged_in:
                    logged_in = await self.login(browser, user)
                    continue
                if random.random() < 0.004:  # noqa: S311
                    started = time.monotonic()
                    try:
                        result = await browser_login(browser, f"{self.base}/oauth2/sign_out")
                        self.record(started, "ok logout" if result.status < 400 else f"logout {result.status}")
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        self.record(started, f"logout {type(exc).__name__}")
                    browser.cookie_jar.clear()
                    logged_in = False
                    continue
                started = time.monotonic()
                try:
                    async with browser.get(f"{self.base}/c{n}/{random.randrange(1000)}",  # noqa: S311
                                           headers={"Accept": "application/json"}, allow_redirects=False) as resp:
                        await resp.read()
                        status, request_id = resp.status, resp.headers.get("X-Request-Id", "")
                    outcome = "ok proxied" if status == 200 else f"proxied {status}"
                except (TimeoutError, aiohttp.ClientError) as exc:
                    outcome, request_id = f"proxied {type(exc).__name__}", ""
                begin, end = self.window
                if outcome == "proxied 401" and not (started <= end and time.monotonic() >= begin):
                    self.lost += 1
                self.record(started, outcome, request_id)


REDIS_ARGS = {"pause": (), "restart": ("--appendonly", "yes", "--appendfsync", "always")}


async def redis_outage(soak: Soak, farm: RedisFarm, port: int, fault: str, at: float, outage: float) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))  # the schedule of the fault, not synchronisation
    begin = time.monotonic()
    soak.window = (begin, float("inf"))
    proc = farm.procs[0]
    if fault == "pause":
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(outage)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    else:
        proc.kill()
        proc.wait()
        await asyncio.sleep(outage)
        await asyncio.to_thread(farm.start, "soak", *REDIS_ARGS[fault], port=port)  # returns once it accepts
    soak.window = (begin, time.monotonic() + GRACE)


async def wait_serving(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(400):
            assert proc.poll() is None, "the gateway exited"
            try:
                async with http.get(f"{base}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError("the gateway did not become ready")


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    op = TestOP(access_token_ttl=args.token_ttl)
    op.start()
    farm = RedisFarm(workdir)
    echo = GatewayServer(echo_app(), host="127.0.0.1")
    proc: subprocess.Popen[bytes] | None = None
    stack = contextlib.ExitStack()
    try:
        redis_port = farm.start("soak", *REDIS_ARGS[args.fault])
        await echo.start_server()
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        config = workdir / "config.yaml"
        config.write_text(yaml.safe_dump({
            "listen": f"127.0.0.1:{port}", "public_url": base, "log_level": "warning",
            "log_format": "json",
            "oidc": {"issuer": op.issuer, "client_id": "gateway", "client_secret": op.clients["gateway"],
                     "scopes": ["openid", "profile", "email", "offline_access"]},  # refresh tokens
            "session": {"store": "redis", "key_prefix": "soak:", "cookie_secret": COOKIE_SECRET,
                        "cookie_secure": False, "refresh_before_expiry": f"{max(1, args.token_ttl // 3)}s",
                        "redis_url": f"redis://127.0.0.1:{redis_port}/0"},  # redis_timeout: the default, 1 s
            "upstreams": [{"path": "/", "url": str(echo.make_url("")).rstrip("/")}],
        }))
        # The log goes to a file: a pipe nobody reads would block the gateway once its buffer is full.
        log_file = stack.enter_context(open(args.log or workdir / "gateway.log", "wb"))  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=log_file)
        await wait_serving(base, proc)
        started = time.monotonic()
        soak = Soak(base, started + args.duration)
        clients = [asyncio.create_task(soak.client(n)) for n in range(args.clients)]
        await asyncio.sleep(min(5.0, args.duration / 6))  # warm-up before the first RSS sample
        rss_before = rss_kib(proc.pid)
        op.reset_stats()
        await redis_outage(soak, farm, redis_port, args.fault, started + args.duration / 3, args.outage)
        await asyncio.gather(*clients)
        rss_after = rss_kib(proc.pid)
        alive = proc.poll() is None
        stats = op.stats()
        errors_outside = sum(n for k, n in soak.outside.items() if not k.startswith("ok"))
        return {
            "duration_s": args.duration, "clients": args.clients, "fault": args.fault, "outage_s": args.outage,
            "token_ttl_s": args.token_ttl, "gateway_alive": alive,
            "outside_window": dict(soak.outside), "inside_window": dict(soak.inside),
            "errors_outside_window": errors_outside, "sessions_lost": soak.lost,
            "error_examples": soak.examples,
            "refreshes_granted": stats.get("success", {}).get("refresh_token", 0),
            "refresh_errors": stats.get("error", {}), "rss_kib_before": rss_before, "rss_kib_after": rss_after,
        }
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=40)
        for redis_proc in farm.procs:
            if redis_proc.poll() is None:
                os.kill(redis_proc.pid, signal.SIGCONT)
        farm.stop()
        await echo.close()
        op.stop()
        stack.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--outage", type=float, default=5.0)
    parser.add_argument("--fault", choices=sorted(REDIS_ARGS), default="pause")
    parser.add_argument("--token-ttl", type=int, default=8)
    parser.add_argument("--log", type=Path, help="keep the gateway's log (JSON lines, warning and up) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        report = asyncio.run(run(args, Path(workdir)))
    print(json.dumps(report, indent=2))
    ok = report["errors_outside_window"] == 0 and report["sessions_lost"] == 0 and report["gateway_alive"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
