"""User-space instructions per proxied request, counted by valgrind's callgrind: exact and repeatable.

    .venv/bin/python benchmarks/instructions.py [--requests 1000] [VARIANT ...]

On this project's VMs, CPU time per request drifts by 20-50% between runs, which hides any change
smaller than that; callgrind counts the instructions the server executes in user space, the same
count for the same code and requests (syscalls are not in it). Each VARIANT is a server started under
callgrind with instrumentation off, warmed with 200 requests, then counted over `--requests` Bearer-JWT
GETs (8 concurrent) to the same nginx (or aiohttp) upstream:

  bare-lean            a bare aiohttp server relaying through the lean upstream client: the floor
  gateway              the gateway as configured by benchmarks/run.py (1 worker, Bearer JWT)
  gateway:log          the same without the access log line (AccessLogger.log does nothing)
  gateway:metrics      the same without the per-request metrics
  gateway:log,metrics  both off
  gateway-session      the gateway as in `gateway`, each GET with a session cookie (a real login) instead

A variant's options after the colon apply to gateway-session too (gateway-session:log).

Default: all five. A variant's server log stays in the printed temporary directory. Not part of the
test suite; docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

VARIANTS = ("bare-lean", "gateway", "gateway:log", "gateway:metrics", "gateway:log,metrics", "gateway-session")


def serve_gateway(config: str, off: set[str]) -> None:
    """The gateway's CLI with the parts named in `off` switched off (a measurement, never a deployment)."""
    from gateway.web import observability

    if "log" in off:
        observability.AccessLogger.log = lambda self, request, response, duration: None  # type: ignore[method-assign]
    if "metrics" in off:
        observability.Metrics.request_done = lambda self, route, status, started: None  # type: ignore[method-assign]
        observability.Metrics.record_upstream = lambda self, origin, status, seconds: None  # type: ignore
        observability.Metrics.request_started = lambda self: None  # type: ignore[method-assign]
        observability.Metrics.instrument_store = lambda self, store: store  # type: ignore[method-assign]
        observability.Metrics.record_bearer = lambda self, error: None  # type: ignore[method-assign]
    from gateway.cli import main

    sys.argv = ["oidc-gateway", "--config", config]
    main()


def serve_bare_lean(port: int, upstream: str) -> None:
    """A bare aiohttp server relaying each request through the lean client (hop-by-hop headers dropped)."""
    import uvloop
    from aiohttp import web
    from multidict import CIMultiDict
    from yarl import URL

    from gateway.proxy.upstream import LeanClient, Target

    hop = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                     "transfer-encoding", "upgrade", "host", "content-length"})
    target = Target.for_url(URL(upstream))
    assert target is not None
    client_key = web.AppKey("lean", LeanClient)

    async def client_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[client_key] = LeanClient()
        yield
        await app[client_key].close()

    async def relay(request: web.Request) -> web.Response:
        headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in hop)
        answer = await request.app[client_key].request(target, request.method, request.rel_url.raw_path_qs,
                                                       headers, connect_timeout=5, read_timeout=30)
        assert answer is not None
        try:
            body = answer.read_nowait()
            while chunk := await answer.read(65536):
                body += chunk
            return web.Response(status=answer.status, body=body, headers={
                k: v for k, v in answer.headers.items() if k.lower() not in hop})
        finally:
            answer.release()

    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_route("*", "/{tail:.*}", relay)
    web.run_app(app, host="127.0.0.1", port=port, loop=uvloop.new_event_loop(), print=None, access_log=None)


def count(variant: str, requests: int, tmp: Path, op: object, upstream: str, token: str) -> float:
    """Instructions per request of one variant."""
    import aiohttp
    from run import PY, free_port, gateway_config, session_cookie, wait_http

    port = free_port()
    if variant == "bare-lean":
        argv = [PY, __file__, "--serve-bare-lean", str(port), upstream]
        ready = f"http://127.0.0.1:{port}/"
    else:
        config = gateway_config(tmp, port, op, upstream, 1)  # type: ignore[arg-type]
        argv = [PY, __file__, "--serve-gateway", str(config), variant.partition(":")[2]]
        ready = f"http://127.0.0.1:{port}/healthz"
    name = re.sub(r"\W", "_", variant)
    out = tmp / f"callgrind-{name}.out"
    server = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                               *argv], stdout=open(tmp / f"{name}.log", "wb"),  # noqa: SIM115 - closed at exit
                              stderr=subprocess.STDOUT, cwd=ROOT)

    credential = {"Authorization": f"Bearer {token}"}

    async def drive(n: int) -> None:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
            async def worker(k: int) -> None:
                for _ in range(k):
                    async with session.get(f"http://127.0.0.1:{port}/", headers=credential) as answer:
                        await answer.read()
                        assert answer.status == 200, answer.status
            await asyncio.gather(*(worker(n // 8) for _ in range(8)))

    try:
        wait_http(ready, timeout=300)
        if variant.startswith("gateway-session"):
            credential = {"Cookie": asyncio.run(session_cookie(f"http://127.0.0.1:{port}"))}
        asyncio.run(drive(200))
        subprocess.run(["callgrind_control", "--instr=on", str(server.pid)], check=True, capture_output=True)
        asyncio.run(drive(requests))
        subprocess.run(["callgrind_control", "--instr=off", str(server.pid)], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "--dump", str(server.pid)], check=True, capture_output=True)
    finally:
        server.terminate()
        server.wait(120)
    total = 0
    for dump in tmp.glob(f"callgrind-{name}.out*"):
        found = re.search(r"^totals:\s*(\d+)", dump.read_text(errors="replace"), re.M)
        total += int(found.group(1)) if found else 0
    return total / (requests // 8 * 8)


def main() -> int:
    if sys.argv[1:2] == ["--serve-gateway"]:
        serve_gateway(sys.argv[2], set(filter(None, sys.argv[3].split(","))))
        return 0
    if sys.argv[1:2] == ["--serve-bare-lean"]:
        serve_bare_lean(int(sys.argv[2]), sys.argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("variants", nargs="*", default=list(VARIANTS))
    args = parser.parse_args()
    from run import start_upstream

    from tests.integration.test_bearer import jwt_access_token
    from tests.support.op import TestOP

    tmp = Path(tempfile.mkdtemp(prefix="oidc-gateway-instructions-"))
    op = TestOP()
    op.start()
    upstream, upstream_url = start_upstream(tmp)
    try:
        token = asyncio.run(jwt_access_token(op))
        for variant in args.variants:
            per_request = count(variant, args.requests, tmp, op, upstream_url, token)
            print(f"{variant:<22} {per_request / 1000:8.1f} k instructions per request", flush=True)
    finally:
        upstream.stop()
        op.stop()
        print(f"logs: {tmp}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
