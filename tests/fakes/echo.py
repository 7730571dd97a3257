"""Echo upstream: a real aiohttp app that answers with what it received (a fake for proxy tests).

Any path (the dispatch looks only at the last path segment, so the fake works behind any prefix):

* default: JSON {upstream, method, path, raw_path, query_string, headers: [[name, value], ...] in
  order, body_size, body_sha256}; the body is read in chunks while hashing, never held;
* `__stream?size=N[&chunked=1]`: N bytes of `pattern()` (Content-Length unless chunked), generated
  chunk by chunk;
* `__ws`: websocket echo (subprotocols echo.v1/echo.v2): text and binary echoed; `headers` answers
  with the handshake's request headers; `close:<code>` closes with that code. A close started by
  the peer is reported on `app[WS_CLOSES]`;
* `__slow?delay=S`: answers after S seconds (a fake slow upstream);
* `__abort[?chunked=1]`: sends the headers and 64 KiB of a 1 MiB body, then closes the connection;
* `__cookies`: two Set-Cookie headers; `__status?code=N`: status N, no body;
* `__gzip`: GZIP_BODY with Content-Encoding: gzip.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from collections.abc import Iterator

from aiohttp import WSMsgType, web

__all__ = ["BLOCK", "GZIP_BODY", "GZIP_PLAIN", "WS_CLOSES", "echo_app", "pattern", "pattern_sha256"]

BLOCK = bytes(range(256)) * 256  # 64 KiB
GZIP_PLAIN = b'{"compressed": true}' * 64
GZIP_BODY = gzip.compress(GZIP_PLAIN, mtime=0)
NAME = web.AppKey("name", str)
WS_CLOSES = web.AppKey("ws_closes", asyncio.Queue)  # close codes sent by websocket peers


def pattern(size: int) -> Iterator[bytes]:
    """`size` bytes of a repeating pattern, in chunks of at most 64 KiB."""
    full, rest = divmod(size, len(BLOCK))
    for _ in range(full):
        yield BLOCK
    if rest:
        yield BLOCK[:rest]


def pattern_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for chunk in pattern(size):
        digest.update(chunk)
    return digest.hexdigest()


def _headers(request: web.Request) -> list[list[str]]:
    return [[name, value] for name, value in request.headers.items()]


async def _echo(request: web.Request) -> web.Response:
    digest = hashlib.sha256()
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        digest.update(chunk)
        size += len(chunk)
    return web.json_response({
        "upstream": request.app[NAME],
        "method": request.method,
        "path": request.path,
        "raw_path": request.raw_path,
        "query_string": request.rel_url.raw_query_string,
        "headers": _headers(request),
        "body_size": size,
        "body_sha256": digest.hexdigest(),
    })


async def _stream(request: web.Request) -> web.StreamResponse:
    size = int(request.query["size"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if "chunked" in request.query:
        response.enable_chunked_encoding()
    else:
        response.content_length = size
    await response.prepare(request)
    if request.method == "HEAD":
        return response
    try:
        for chunk in pattern(size):
            await response.write(chunk)
        await response.write_eof()
    except ConnectionError:
        pass  # the client (the proxy) went away: that is what some tests do
    return response


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("echo.v1", "echo.v2"))
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            if msg.data == "headers":
                await ws.send_json({"headers": _headers(request), "protocol": ws.ws_protocol})
            elif msg.data.startswith("close:"):
                await ws.close(code=int(msg.data.partition(":")[2]), message=b"bye")
                return ws
            else:
                await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    request.app[WS_CLOSES].put_nowait(ws.close_code)
    return ws


async def _slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "1")))
    return await _echo(request)


async def _abort(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    if "chunked" in request.query:
        response.enable_chunked_encoding()
    else:
        response.content_length = 1024 * 1024
    await response.prepare(request)
    await response.write(BLOCK)
    assert request.transport is not None
    request.transport.close()  # flushes what was written, then the connection is gone
    return response


async def _cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies")
    response.headers.add("Set-Cookie", "a=1; Path=/")
    response.headers.add("Set-Cookie", "b=2; Path=/; HttpOnly")
    return response


async def _status(request: web.Request) -> web.Response:
    return web.Response(status=int(request.query["code"]), headers={"ETag": '"v1"'})


async def _gzip(request: web.Request) -> web.Response:
    return web.Response(body=GZIP_BODY, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})


_SPECIAL = {
    "__stream": _stream, "__ws": _websocket, "__slow": _slow, "__abort": _abort, "__cookies": _cookies,
    "__status": _status, "__gzip": _gzip,
}


async def _dispatch(request: web.Request) -> web.StreamResponse:
    handler = _SPECIAL.get(request.path.rpartition("/")[2], _echo)
    return await handler(request)


def echo_app(name: str = "echo") -> web.Application:
    """A fresh echo upstream; `name` is reported as `upstream` in every JSON answer."""
    app = web.Application()
    app[NAME] = name
    app[WS_CLOSES] = asyncio.Queue()
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app
