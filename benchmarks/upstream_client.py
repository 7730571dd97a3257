"""Micro-benchmark: the lean upstream client against aiohttp's ClientSession, alone, on one upstream.

    python benchmarks/upstream_client.py http://127.0.0.1:PORT/ [--requests 20000] [--concurrency 32]

Both clients send the same GETs (a few proxy-like headers) to the same upstream (nginx, say) under
uvloop and read the answers; printed: process CPU microseconds per request for each. Not part of the
test suite; docs/performance.md quotes it.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import uvloop
from multidict import CIMultiDict
from yarl import URL

from gateway.proxy.upstream import LeanClient, Target

HEADERS = [("Accept", "*/*"), ("X-Forwarded-For", "127.0.0.1"), ("X-Real-IP", "127.0.0.1"),
           ("X-Request-Id", "0123456789abcdef0123456789abcdef"), ("X-Auth-Request-User", "alice"),
           ("Authorization", "Bearer " + "x" * 800)]


async def lean(url: URL, requests: int, concurrency: int) -> float:
    client = LeanClient()
    target = Target.for_url(url.with_path("/"))
    assert target is not None, "the lean client takes plain-http URLs only"
    headers = CIMultiDict(HEADERS)

    async def worker(n: int) -> None:
        for _ in range(n):
            response = await client.request(target, "GET", url.raw_path_qs, headers, connect_timeout=5,
                                            read_timeout=5)
            assert response is not None
            response.read_nowait()
            while await response.read(65536):
                pass
            response.release()

    try:
        return await _timed(worker, requests, concurrency)
    finally:
        await client.close()


async def stock(url: URL, requests: int, concurrency: int) -> float:
    async with aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar()) as session:
        async def worker(n: int) -> None:
            for _ in range(n):
                async with session.get(url, headers=HEADERS) as response:
                    await response.read()

        return await _timed(worker, requests, concurrency)


async def _timed(worker, requests: int, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    await asyncio.gather(*(worker(4) for _ in range(concurrency)))  # connections up, code warm
    started = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    return (time.process_time() - started) / (requests // concurrency * concurrency) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("url", type=URL)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    for name, run in (("lean client", lean), ("aiohttp ClientSession", stock)):
        print(f"{name:<22} {uvloop.run(run(args.url, args.requests, args.concurrency)):6.1f} CPU us/request")


if __name__ == "__main__":
    main()
