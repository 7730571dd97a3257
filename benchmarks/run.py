"""The benchmark: one command, every contestant measured in the same run, ratios to the bare proxy.

    benchmarks/run [--duration 10] [--connections 32] [--threads 1] [--repeat 1] [--versus-rounds 4]
                   [--json results.json] [--quick] [--apache | --no-apache] [--profile F]

Starts an upstream (nginx from Debian when present, else an aiohttp one), the test OP (node
oidc-provider), the bare aiohttp proxy baseline and the gateway (Redis sessions), logs in for real to
get a session cookie, fetches a JWT access token (client_credentials with a resource indicator), then
drives wrk on loopback against: the upstream directly, the bare proxy, the gateway with a Redis
session, with a Bearer JWT, and /oauth2/auth; small and 64 KiB bodies; 1 and 2 workers. Also cold
login latency (median of 20, and the same flow straight against the OP, and through a bare RP that
does no checks: benchmarks/bare_rp.py) and RSS after load.
When Debian's apache2-bin and libapache2-mod-auth-openidc are installed, Apache with mod_auth_openidc
(2 processes, event MPM; benchmarks/apache/) in the same run, signed in at the same OP, in front of the
same upstream, small body: session in its shared-memory cache, in Redis, and a Bearer JWT; measured in
rounds alternating with the 2-worker gateway, and the gateway's req/s and CPU us/req as a ratio to it.
CPU microseconds per request come from /proc (utime+stime of the server's processes); the upstream's
and wrk's per request are shown beside them, since all share the machine's cores.
Not part of the test suite: it asserts nothing, it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import apache_oidc  # noqa: E402 - benchmarks/apache_oidc.py, needs the repository on sys.path

from tests.integration.test_bearer import jwt_access_token  # noqa: E402
from tests.support.op import TestOP, browser_login  # noqa: E402

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
COOKIE_SECRET = "benchmark-cookie-secret-0123456789abcdef0123"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"benchmark: {url} did not come up") from None
            time.sleep(0.1)


def family(pid: int) -> list[int]:
    """pid and all its descendants (workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        return family(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            pids = self.pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                for pid in reversed(pids):  # the workers too (Apache's children outlive a killed parent)
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.proc.wait()


@dataclass
class Result:
    name: str
    rps: float
    p99_ms: float
    cpu_us: float
    errors: int
    extra: dict[str, Any] = field(default_factory=dict)


def start(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None, preexec_fn: Callable[[], None] | None = None) -> Server:
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                            cwd=cwd, preexec_fn=preexec_fn)  # noqa: PLW1509 - only prctl, no locks
    return Server(name, proc)


def start_upstream(tmp: Path) -> tuple[Server, str]:
    port = free_port()
    (tmp / "64k.bin").write_bytes(os.urandom(64 * 1024))
    if shutil.which("nginx"):
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (tmp / sub).mkdir(exist_ok=True)
        conf = tmp / "nginx.conf"
        conf.write_text(f"""
daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
user root;
events {{ worker_connections 4096; }}
http {{
  access_log off; client_body_temp_path {tmp}/client_body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location = /64k {{ alias {tmp}/64k.bin; }}
    location / {{ default_type text/plain; return 200 "hello from upstream\\n"; }}
  }}
}}
""")
        server = start("upstream-nginx", ["nginx", "-c", str(conf)], tmp)
    else:
        script = tmp / "upstream.py"
        script.write_text(f"""
from aiohttp import web
import uvloop
body = open({str(tmp / '64k.bin')!r}, 'rb').read()
async def h(r):
    return web.Response(body=body) if r.path == '/64k' else web.Response(text='hello from upstream\\n')
app = web.Application(); app.router.add_route('*', '/{{t:.*}}', h)
web.run_app(app, host='127.0.0.1', port={port}, access_log=None, print=None, loop=uvloop.new_event_loop())
""")
        server = start("upstream-aiohttp", [PY, str(script)], tmp)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/")
    return server, url


def gateway_config(tmp: Path, port: int, op: TestOP, upstream: str, workers: int) -> Path:
    path = tmp / f"gateway-{port}.yaml"
    workers_line = f"workers: {workers}\n" if workers > 1 else ""
    path.write_text(f"""listen: "127.0.0.1:{port}"
public_url: "http://127.0.0.1:{port}"
{workers_line}oidc:
  issuer: "{op.issuer}"
  client_id: gateway
  client_secret: "{op.clients['gateway']}"
  scopes: [openid, profile, email, offline_access]
session:
  store: redis
  redis_url: "{REDIS_URL}"
  key_prefix: "oidc-gateway-bench:{uuid.uuid4().hex}:"
  cookie_secret: "{COOKIE_SECRET}"
  cookie_secure: false
access:
  bearer:
    audiences: [gateway, "urn:gateway:api"]
upstreams:
  - path: /
    url: "{upstream}"
""")
    return path


def start_gateway(tmp: Path, op: TestOP, upstream: str, workers: int) -> tuple[Server, str]:
    port = free_port()
    config = gateway_config(tmp, port, op, upstream, workers)
    server = start(f"gateway-w{workers}", [PY, "-m", "gateway", "--config", str(config)], tmp, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz")
    return server, url


def wrk(url: str, *, headers: dict[str, str], duration: int, connections: int, threads: int) -> tuple[
        float, float, int, int]:
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", url]
    for name, value in headers.items():
        argv[1:1] = ["-H", f"{name}: {value}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99_ms = float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(bad.group(1)) if bad else 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return rps, p99_ms, requests, errors


def measure(name: str, server: Server, url: str, args: argparse.Namespace,
            headers: dict[str, str] | None = None, expect: int = 200, upstream: Server | None = None) -> Result:
    """One contestant's req/s, p99 and CPU per request; also what the upstream (`upstream`, when it is
    another process) and wrk spent per request, for the 2-core machine is shared by all three."""
    probe = urllib.request.Request(url, headers=headers or {})
    try:
        status = urllib.request.urlopen(probe, timeout=5).status  # noqa: S310 - loopback
    except urllib.error.HTTPError as exc:
        status = exc.code
    if status != expect:
        raise SystemExit(f"benchmark: {name}: {url} answered {status}, expected {expect}")
    # Warm up (connection pools, caches), then measure.
    wrk(url, headers=headers or {}, duration=2, connections=args.connections, threads=args.threads)
    pids = server.pids()
    neighbour = upstream.pids() if upstream is not None and upstream is not server else []
    before, neighbour_before = cpu_seconds(pids), cpu_seconds(neighbour)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    rps, p99, requests, errors = wrk(url, headers=headers or {}, duration=args.duration,
                                     connections=args.connections, threads=args.threads)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_us = (cpu_seconds(pids) - before) / max(requests, 1) * 1e6
    wrk_us = (done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime) / max(requests, 1) * 1e6
    upstream_us = (cpu_seconds(neighbour) - neighbour_before) / max(requests, 1) * 1e6 if neighbour else None
    if set(server.pids()) - set(pids):
        print(f"  warning: {name}: processes started during the run; their CPU is not counted", flush=True)
    result = Result(name, rps, p99, cpu_us, errors, {"wrk_cpu_us": wrk_us, "upstream_cpu_us": upstream_us})
    upstream_text = "" if upstream_us is None else f"  upstream {upstream_us:>4.0f} us/req"
    print(f"  {name:<52} {rps:>9.0f} req/s  p99 {p99:>6.1f} ms  {cpu_us:>6.0f} us/req  errors {errors}"
          f"{upstream_text}  wrk {wrk_us:>4.0f} us/req", flush=True)
    return result


async def session_cookie(gateway: str) -> str:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        result = await browser_login(browser, f"{gateway}/")
        assert result.status == 200, result.body
        return next(f"{c.key}={c.value}" for c in browser.cookie_jar if c.key == "_oidc_gateway")


async def _login_through(rp: str) -> float:
    """Seconds for a new browser's full login at `rp` (gateway or bare RP), ending on the upstream's page."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        started = time.perf_counter()
        result = await browser_login(browser, f"{rp}/")
        elapsed = time.perf_counter() - started
        assert result.status == 200, result.body
        return elapsed


async def _login_at_op(op: TestOP, redirect_uri: str) -> float:
    """Seconds for the OP's part of that flow alone: authorize, sign-in, consent, token, userinfo."""
    basic = base64.b64encode(f"gateway:{op.clients['gateway']}".encode()).decode()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        authorize = URL(f"{op.issuer}/auth").with_query(
            response_type="code", client_id="gateway", redirect_uri=redirect_uri,
            scope="openid profile email offline_access", prompt="consent", state=uuid.uuid4().hex,
            nonce=uuid.uuid4().hex)
        started = time.perf_counter()
        stop = await browser_login(browser, authorize, stop_at=lambda u: u.path == "/oauth2/callback")
        code = URL(stop.headers["Location"]).query["code"]
        token = await browser.post(f"{op.issuer}/token", headers={"Authorization": f"Basic {basic}"},
                                   data={"grant_type": "authorization_code", "code": code,
                                         "redirect_uri": redirect_uri})
        access = (await token.json())["access_token"]
        await (await browser.get(f"{op.issuer}/me", headers={"Authorization": f"Bearer {access}"})).read()
        return time.perf_counter() - started


async def cold_logins(gateway: str, bare_rp: str, op: TestOP, n: int) -> dict[str, float]:
    """Median ms of a full login through the gateway, through the bare RP (benchmarks/bare_rp.py: the
    browser's extra requests and the OP calls with no checks, the floor of any RP here), and of the
    OP's part alone; the three alternate, so that a slow spell of the machine hits them alike."""
    times: dict[str, list[float]] = {"gateway": [], "bare_rp": [], "direct": []}
    for _ in range(n):
        times["gateway"].append(await _login_through(gateway))
        times["bare_rp"].append(await _login_through(bare_rp))
        times["direct"].append(await _login_at_op(op, f"{gateway}/oauth2/callback"))
    return {what: statistics.median(samples) * 1000 for what, samples in times.items()}


def median(samples: list[Result]) -> Result:
    """One Result from repeated runs of a contestant: the median of each figure, the errors summed."""
    extra = {key: None if any(r.extra.get(key) is None for r in samples) else
             statistics.median(r.extra[key] for r in samples) for key in ("wrk_cpu_us", "upstream_cpu_us")}
    return Result(samples[0].name, statistics.median(r.rps for r in samples),
                  statistics.median(r.p99_ms for r in samples), statistics.median(r.cpu_us for r in samples),
                  sum(r.errors for r in samples), extra)


def profiler(server: Server, out: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling `server` (at 200 Hz, raw stacks) until SIGINT; the profile costs it some CPU."""
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or "py-spy"
    return subprocess.Popen([spy, "record", "-r", "200", "-f", "raw", "-o", str(out), "-p", str(server.proc.pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def table(results: list[Result], baseline: Result) -> str:
    """Medians over the rounds; ratio and p99 multiple are per round against that round's bare proxy
    (then the median), except for contestants measured outside the rounds (2 workers): medians there."""
    lines = ["| contestant | req/s | ratio to bare proxy | p99 ms | p99 / bare | CPU us/req | upstream CPU us/req "
             "| wrk CPU us/req | errors |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        ratio = r.extra.get("ratio", r.rps / baseline.rps)
        p99x = r.extra.get("p99_x_bare", r.p99_ms / baseline.p99_ms)
        neighbours = " | ".join("-" if r.extra.get(key) is None else f"{r.extra[key]:.0f}"
                                for key in ("upstream_cpu_us", "wrk_cpu_us"))
        lines.append(f"| {r.name} | {r.rps:.0f} | {ratio:.2f} | {r.p99_ms:.1f} | {p99x:.1f} | {r.cpu_us:.0f} "
                     f"| {neighbours} | {r.errors} |")
    return "\n".join(lines)


@dataclass
class Apache:
    """One Apache + mod_auth_openidc contestant: the server, its URL and the session cookie it issued."""

    label: str  # "shm" | "Redis"
    server: Server
    url: str
    cookie: str
    directory: Path  # its pid file and logs


def start_apache(tmp: Path, op: TestOP, upstream: str, *, redis: bool) -> Apache | None:
    """Apache with mod_auth_openidc on a free port, signed in; None (and why, printed) if it fails."""
    label = "Redis" if redis else "shm"
    port = free_port()
    directory = tmp / f"apache-{label.lower()}"
    argv, env = apache_oidc.start_argv(directory, port=port, op=op, upstream=upstream,
                                       redis=URL(REDIS_URL).authority if redis else None)
    server = start(f"apache-{label.lower()}", argv, tmp, env=env, preexec_fn=apache_oidc.preexec())
    url = f"http://127.0.0.1:{port}"
    problem = apache_oidc.wait_ready(server.proc, url + "/", directory)
    try:
        cookie = asyncio.run(apache_oidc.session_cookie(url)) if problem is None else ""
    except (RuntimeError, StopIteration, aiohttp.ClientError) as exc:
        problem = f"login failed: {exc!r}"
    if problem is not None:
        server.stop()
        print(f"mod_auth_openidc ({label}): skipped: {problem}", flush=True)
        return None
    return Apache(label, server, url, cookie, directory)


# (what, the gateway's row, mod_auth_openidc's row); the first is the target (>= 1.0x req/s).
VERSUS = (
    ("Redis session, 2 workers / mod_auth_openidc shm session", "gateway, Redis session, 2 workers (small)",
     "mod_auth_openidc, shm session, 2 processes (small)"),
    ("Bearer JWT, 2 workers / mod_auth_openidc Bearer JWT", "gateway, Bearer JWT, 2 workers (small)",
     "mod_auth_openidc, Bearer JWT, 2 processes (small)"),
    ("Redis session, 2 workers / mod_auth_openidc Redis session", "gateway, Redis session, 2 workers (small)",
     "mod_auth_openidc, Redis session, 2 processes (small)"),
    ("Redis session, 1 worker / mod_auth_openidc shm session", "gateway, Redis session, 1 worker (small)",
     "mod_auth_openidc, shm session, 2 processes (small)"),
)


def versus(rounds: dict[str, list[Result]], second: dict[str, list[Result]]) -> dict[str, dict[str, float]]:
    """The gateway against mod_auth_openidc: req/s and CPU us/req ratios, round by round when both ran in
    the same rounds (`second`; then the median), else the ratio of their medians."""
    out: dict[str, dict[str, float]] = {}
    everything = {**rounds, **second}
    for what, ours, theirs in VERSUS:
        if ours not in everything or theirs not in everything:
            continue
        a, b = everything[ours], everything[theirs]
        pairs = list(zip(a, b, strict=True)) if ours in second and theirs in second else [(median(a), median(b))]
        out[what] = {"rps_ratio": statistics.median(x.rps / y.rps for x, y in pairs),
                     "rps_ratios": [round(x.rps / y.rps, 3) for x, y in pairs],
                     "cpu_us_ratio": statistics.median(x.cpu_us / y.cpu_us for x, y in pairs),
                     "gateway_rps": median(a).rps, "gateway_cpu_us": median(a).cpu_us,
                     "mod_auth_openidc_rps": median(b).rps, "mod_auth_openidc_cpu_us": median(b).cpu_us}
    return out


def workers_supported() -> bool:
    from gateway.config import Settings

    return "workers" in Settings.model_fields


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run [10]")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections [32]")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads [1]")
    parser.add_argument("--logins", type=int, default=20, help="cold logins to time [20]")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds over the contestants (the 2-worker gateway and mod_auth_openidc: rounds of "
                             "their own, after the others); the table shows the median of each [1]")
    parser.add_argument("--versus-rounds", type=int, default=4,
                        help="rounds of the 2-worker gateway and mod_auth_openidc, alternating (at least --repeat): "
                             "their ratio moves by 10-20%% from one round to the next on a small VM [4]")
    parser.add_argument("--quick", action="store_true",
                        help="only the small-body contestants, 1 worker, no cold logins, no Apache unless "
                             "--apache (while iterating)")
    parser.add_argument("--apache", action=argparse.BooleanOptionalAction, default=None,
                        help="Apache + mod_auth_openidc contestants [on in full runs when installed, off with "
                             "--quick]")
    parser.add_argument("--profile", type=Path,
                        help="record the 1-worker gateway with py-spy (raw format) during the small-body session "
                             "and Bearer runs, into F.session.txt and F.bearer.txt (the CPU figures then "
                             "include the sampler's cost)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("benchmark: wrk is missing (apt-get install wrk)")

    servers: list[Server] = []
    tmp = Path(tempfile.mkdtemp(prefix="oidc-gateway-bench-"))
    op = TestOP()
    op.start()
    try:
        upstream, upstream_url = start_upstream(tmp)
        servers.append(upstream)
        bare_port = free_port()
        bare = start("bare-proxy", [PY, str(ROOT / "benchmarks" / "bare_proxy.py"), str(bare_port), upstream_url],
                     tmp)
        servers.append(bare)
        bare_url = f"http://127.0.0.1:{bare_port}"
        wait_http(bare_url + "/")
        gateway, gateway_url = start_gateway(tmp, op, upstream_url, workers=1)
        servers.append(gateway)
        cookie = asyncio.run(session_cookie(gateway_url))
        bearer = asyncio.run(jwt_access_token(op))
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        machine = (f"{os.cpu_count()} cores, wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
                   f"upstream {upstream.name}")
        print(f"started {started}; machine: {machine}", flush=True)

        results: list[Result] = []
        bodies = (("small", "/"),) if args.quick else (("small", "/"), ("64 KiB", "/64k"))
        plan: list[tuple[str, Server, str, dict[str, str] | None, int, str | None]] = []
        for body, path in bodies:
            plan.append((f"upstream direct ({body})", upstream, upstream_url + path, None, 200, None))
            plan.append((f"bare aiohttp proxy, 1 process ({body})", bare, bare_url + path, None, 200, None))
            plan.append((f"gateway, Redis session, 1 worker ({body})", gateway, gateway_url + path,
                         {"Cookie": cookie}, 200, "session" if path == "/" else None))
            plan.append((f"gateway, Bearer JWT, 1 worker ({body})", gateway, gateway_url + path,
                         {"Authorization": f"Bearer {bearer}"}, 200, "bearer" if path == "/" else None))
        plan.append(("gateway /oauth2/auth (forward-auth, session)", gateway, gateway_url + "/oauth2/auth",
                     {"Cookie": cookie}, 202, None))
        # Rounds over the whole plan (not one contestant several times in a row), the median of each:
        # a burst of load from something else on the machine then spoils one sample, not a contestant.
        rounds: dict[str, list[Result]] = {}
        for round_ in range(args.repeat):
            for name, server, url, headers, expect, kind in plan:
                spy = profiler(server, args.profile.with_suffix(f".{kind}.txt")) \
                    if args.profile and kind and round_ == 0 else None
                rounds.setdefault(name, []).append(measure(name, server, url, args, headers, expect=expect,
                                                           upstream=upstream))
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(timeout=60)
        results.extend(median(samples) for samples in rounds.values())
        # Ratios and p99 multiples round by round (each against the bare proxy of the same round), then
        # the median: steadier than a ratio of medians while the machine's other load comes and goes.
        bare_rounds = rounds["bare aiohttp proxy, 1 process (small)"]
        for result in results:
            samples = rounds[result.name]
            result.extra["ratio"] = statistics.median(r.rps / b.rps for r, b in zip(samples, bare_rounds, strict=True))
            result.extra["p99_x_bare"] = statistics.median(r.p99_ms / b.p99_ms
                                                           for r, b in zip(samples, bare_rounds, strict=True))
        rss = {"gateway (1 worker)": rss_mib(gateway.proc.pid), "bare proxy": rss_mib(bare.proc.pid)}
        logins = {"gateway": float("nan"), "bare_rp": float("nan"), "direct": float("nan")}
        if not args.quick:
            rp_port = free_port()
            bare_rp = start("bare-rp", [PY, str(ROOT / "benchmarks" / "bare_rp.py"), str(rp_port), op.issuer,
                                        "gateway", op.clients["gateway"], upstream_url], tmp)
            servers.append(bare_rp)
            wait_http(f"http://127.0.0.1:{rp_port}/")
            logins = asyncio.run(cold_logins(gateway_url, f"http://127.0.0.1:{rp_port}", op, args.logins))
            bare_rp.stop()
        gateway.stop()

        second: dict[str, list[Result]] = {}  # the 2-worker gateway and Apache, in rounds of their own
        second_plan: list[tuple[str, Server, str, dict[str, str]]] = []
        if workers_supported() and not args.quick:
            gateway2, gateway2_url = start_gateway(tmp, op, upstream_url, workers=2)
            servers.append(gateway2)
            cookie2 = asyncio.run(session_cookie(gateway2_url))
            second_plan.append(("gateway, Redis session, 2 workers (small)", gateway2, gateway2_url + "/",
                                {"Cookie": cookie2}))
            second_plan.append(("gateway, Bearer JWT, 2 workers (small)", gateway2, gateway2_url + "/",
                                {"Authorization": f"Bearer {bearer}"}))
        apaches: list[Apache] = []
        if args.apache is False or (args.apache is None and args.quick):
            print("mod_auth_openidc: skipped (--quick without --apache, or --no-apache)", flush=True)
        elif (problem := apache_oidc.missing()) is not None:
            print(f"mod_auth_openidc: skipped: {problem} (benchmarks/run installs apache2-bin and "
                  "libapache2-mod-auth-openidc when run as root)", flush=True)
        else:
            for redis in (False, True):
                if (apache := start_apache(tmp, op, upstream_url, redis=redis)) is not None:
                    servers.append(apache.server)
                    apaches.append(apache)
                    second_plan.append((f"mod_auth_openidc, {apache.label} session, 2 processes (small)",
                                        apache.server, apache.url + "/", {"Cookie": apache.cookie}))
                    if not redis:
                        second_plan.append(("mod_auth_openidc, Bearer JWT, 2 processes (small)", apache.server,
                                            apache.url + "/bearer/", {"Authorization": f"Bearer {bearer}"}))
        # Alternating, like the first rounds: the gateway and Apache share the machine's bad moments.
        for _ in range(max(args.repeat, args.versus_rounds)):
            for name, server, url, headers in second_plan:
                second.setdefault(name, []).append(measure(name, server, url, args, headers, upstream=upstream))
        results.extend(median(samples) for samples in second.values())
        if workers_supported() and not args.quick:
            workers = [p for p in gateway2.pids() if p != gateway2.proc.pid
                       and b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]
            for i, pid in enumerate(workers):
                rss[f"gateway worker {i + 1} of {len(workers)}"] = rss_mib(pid)
            gateway2.stop()
        for apache in apaches:
            pids = apache.server.pids()
            rss[f"mod_auth_openidc {apache.label} ({len(pids)} processes, summed)"] = sum(rss_mib(p) for p in pids)
            try:
                asyncio.run(apache_oidc.logout(apache.url, apache.cookie))  # its session out of Redis
            except aiohttp.ClientError as exc:
                print(f"mod_auth_openidc ({apache.label}): logout failed: {exc!r}", flush=True)
            apache.server.stop()
            if errors := apache_oidc.error_lines(apache.directory):
                print(f"mod_auth_openidc ({apache.label}): {len(errors)} error lines in its log, the first: "
                      f"{errors[0]}", flush=True)
        against = versus(rounds, second)

        baseline = next(r for r in results if r.name.startswith("bare aiohttp proxy, 1 process (small)"))
        print()
        print(table(results, baseline))
        print()
        print(f"cold login, median of {args.logins}: through the gateway {logins['gateway']:.1f} ms, "
              f"the same flow straight at the OP {logins['direct']:.1f} ms, "
              f"gateway overhead {logins['gateway'] - logins['direct']:+.1f} ms; through the bare RP (no checks, "
              f"the floor) {logins['bare_rp']:.1f} ms, {logins['bare_rp'] - logins['direct']:+.1f} ms over the OP, "
              f"the gateway {logins['gateway'] - logins['bare_rp']:+.1f} ms over the bare RP")
        print("RSS after load (MiB): " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))
        for what, figures in against.items():
            target = what == VERSUS[0][0]
            print(f"{'target' if target else 'also'}: gateway {what}, same run: req/s {figures['rps_ratio']:.2f}x"
                  f"{' (target >= 1.0x)' if target else ''}, CPU us/req {figures['cpu_us_ratio']:.2f}x "
                  f"({figures['gateway_rps']:.0f} vs {figures['mod_auth_openidc_rps']:.0f} req/s, "
                  f"{figures['gateway_cpu_us']:.0f} vs {figures['mod_auth_openidc_cpu_us']:.0f} us/req; req/s ratio "
                  f"by round: {', '.join(f'{r:.2f}' for r in figures['rps_ratios'])})")
        if args.json:
            args.json.write_text(json.dumps({
                "started_utc": started, "machine": machine,
                "results": [r.__dict__ for r in results], "cold_login_ms": logins, "rss_mib": rss,
                "vs_mod_auth_openidc": against}, indent=2))
        return 0
    finally:
        for server in reversed(servers):
            server.stop()
        op.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
