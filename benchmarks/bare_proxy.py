"""The baseline: a bare aiohttp reverse proxy with uvloop, streaming, pooled keep-alive, no auth.

    python benchmarks/bare_proxy.py LISTEN_PORT UPSTREAM_URL

What the gateway is measured against: the same framework doing only the proxying.
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "transfer-encoding", "upgrade", "host"})


def make_app(upstream: str) -> web.Application:
    client_key = web.AppKey("client", aiohttp.ClientSession)

    async def client_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[client_key] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512),
                                                auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        yield
        await app[client_key].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with request.app[client_key].request(
                request.method, upstream + request.rel_url.raw_path_qs, headers=headers,
                data=request.content if request.body_exists else None, allow_redirects=False) as up:
            response = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items() if k.lower() not in HOP_BY_HOP})
            await response.prepare(request)
            async for chunk in up.content.iter_chunked(65536):
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


if __name__ == "__main__":
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")
    web.run_app(make_app(upstream), host="127.0.0.1", port=port, loop=uvloop.new_event_loop(), print=None,
                access_log=None)
