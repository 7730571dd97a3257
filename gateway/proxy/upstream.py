"""LeanClient: a small HTTP/1.1 client for the common proxied request, beside aiohttp's.

A request without a body (any method but HEAD) to a plain-`http` upstream takes this path; bodies,
HEAD, websockets, `https` upstreams and URLs with credentials stay on aiohttp's ClientSession. The
profile of a proxied GET put a third of the gateway's time in aiohttp's client machinery (timers,
ClientRequest/ClientResponse objects, URL handling, connector bookkeeping): here the request head is
one string written in one call, and the response is parsed by httptools (llhttp, the parser of Node.js
and uvicorn) in the connection's own protocol.

What it keeps of aiohttp's client behaviour, so the Forwarder's answer does not depend on the path:
- keep-alive connections pooled per (host, port), reused last-in first-out, dropped after KEEPALIVE
  seconds idle, never reused after an incomplete or unparsable response, a `Connection: close`, or
  bytes the upstream sent unasked;
- an idempotent request on a reused connection that the upstream closed before answering is sent
  once more on a new connection (aiohttp's retry of a persistent connection);
- `Content-Length: 0` added to a bodiless request of a method that expects a body; no other header
  is invented (no User-Agent, Accept, Accept-Encoding); the upstream's Host unless the headers carry one;
- 1xx interim answers are skipped (101 on a request that asked for no upgrade is an error); response
  headers longer than MAX_FIELD_SIZE fail the request, as aiohttp's parser does;
- the same errors: aiohttp.ServerTimeoutError (a TimeoutError) when connecting or a read takes too
  long, ClientConnectionError subclasses when the upstream cannot be reached or goes away, and
  ClientPayloadError for a broken body; CR or LF in a header value is a ValueError;
- bodies are passed on as received (chunked coding removed, content coding untouched), under flow
  control: reading pauses while more than 2 * CHUNK_SIZE bytes wait to be taken.

At most `limit` connections are busy at once; `request()` returns None beyond that (and for upstreams
it does not take), and the caller uses aiohttp instead.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

import aiohttp
import httptools
from aiohttp import hdrs
from multidict import CIMultiDict
from yarl import URL

__all__ = ["LeanClient", "LeanResponse", "Target"]

KEEPALIVE = 15.0  # seconds an idle connection is kept (aiohttp's default keepalive_timeout)
MAX_IDLE = 256  # idle connections kept per upstream
MAX_FIELD_SIZE = 8190  # one response header's name or value (aiohttp's client default)
MAX_HEAD_SIZE = 64 * 1024  # the whole response head
_HIGH_WATER = 128 * 1024  # buffered body bytes above which reading pauses
_IDEMPOTENT = frozenset({"GET", "OPTIONS", "TRACE", "PUT", "DELETE"})
_WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # aiohttp adds no Content-Length to these


class Target:
    """Where one upstream is reached on the lean path: precomputed once per route."""

    __slots__ = ("host", "port", "host_header", "prefix", "key")

    def __init__(self, host: str, port: int, host_header: str, prefix: str) -> None:
        self.host = host
        self.port = port
        self.host_header = host_header  # what aiohttp sends as Host: host, or host:port when not default
        self.prefix = prefix  # the upstream URL's raw path without a trailing slash
        self.key = (host, port)

    @classmethod
    def for_url(cls, url: URL) -> Target | None:
        """The Target for an upstream URL, or None when the lean path does not take it."""
        if url.scheme != "http" or url.raw_user or url.raw_password or not url.host or url.port is None:
            return None
        return cls(url.host, url.port, url.host_port_subcomponent or url.host, url.raw_path.rstrip("/"))


class _BadResponse(aiohttp.ClientError):
    """The upstream's answer could not be parsed, or broke a limit."""


class LeanResponse:
    """The upstream's answer: status, reason and headers at once, the body as it arrives.

    Has the slice of aiohttp.ClientResponse (and of its `content` StreamReader) the Forwarder uses."""

    __slots__ = ("status", "reason", "headers", "_conn", "_chunks", "_size", "_done", "_error", "_waiter")

    def __init__(self, conn: _Connection, status: int, reason: str, headers: CIMultiDict[str]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._conn: _Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False  # the whole body has arrived
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    @property
    def content(self) -> LeanResponse:
        return self

    # -- fed by the connection --

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if self._done or self._error is not None:
            return
        if error is None:
            self._done = True
        else:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the Forwarder --

    def exception(self) -> BaseException | None:
        return self._error

    def is_eof(self) -> bool:
        return self._done and not self._chunks

    def read_nowait(self) -> bytes:
        """Everything that has arrived and not been read."""
        if not self._chunks:
            return b""
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._taken(len(data))
        return data

    async def read(self, n: int) -> bytes:
        """Up to `n` bytes of the body; b"" at its end. Raises on a broken body or a read timeout."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._done or self._conn is None:
                return b""
            conn = self._conn
            self._waiter = conn.loop.create_future()
            timer = conn.loop.call_later(conn.read_timeout, self._time_out)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        self._taken(len(chunk))
        return chunk

    def _taken(self, size: int) -> None:
        self._size -= size
        if self._conn is not None and self._size <= _HIGH_WATER // 2:
            self._conn.resume()

    def _time_out(self) -> None:
        if self._conn is not None:
            self._conn.abandon()
        self._finish(aiohttp.ServerTimeoutError("Timeout on reading data from the upstream"))

    # -- the end of the exchange --

    def release(self) -> None:
        """Give the connection back for reuse when the exchange is complete, else close it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.done(reusable=self._done and self._error is None)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.done(reusable=False)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream, parsing its answers with httptools."""

    def __init__(self, client: LeanClient, key: tuple[str, int], loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.key = key
        self.loop = loop
        self.read_timeout = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = False  # has answered a request before
        self.idle_since = 0.0
        self._parser = httptools.HttpResponseParser(self)
        self._paused = False
        self._busy = False  # a request is out and its answer not complete
        self._head: asyncio.Future[LeanResponse] | None = None
        self._response: LeanResponse | None = None
        self._headers: CIMultiDict[str] = CIMultiDict()
        self._reason = ""
        self._head_size = 0
        self._keep = True
        self._got_bytes = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one without the subclassing

    def data_received(self, data: bytes) -> None:
        if not self._busy:  # the upstream speaks unasked: never trust this connection again
            self.abandon()
            return
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_BadResponse("The upstream switched protocols unasked"))
        except httptools.HttpParserError as exc:  # a callback's own error is the context
            cause = exc.__context__
            self._fail(cause if isinstance(cause, _BadResponse) else _BadResponse("Unparsable upstream response"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if not self._busy:
            self.client._forget(self)
            return
        response = self._response
        if response is not None and exc is None and self._until_eof():
            self._busy = False
            self._keep = False
            response._finish()
            return
        if response is None and not self._got_bytes and self.used:
            error: aiohttp.ClientError = _StaleConnection()
        else:
            error = aiohttp.ServerDisconnectedError()
        self._fail(error)

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        if not self._busy:  # a second answer to one request
            raise _BadResponse("The upstream sent an answer unasked")
        self._headers = CIMultiDict()
        self._reason = ""
        self._head_size = 0

    def on_status(self, reason: bytes) -> None:
        self._reason += reason.decode("latin-1")
        self._limit(len(reason))

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) > MAX_FIELD_SIZE or len(value) > MAX_FIELD_SIZE:
            raise _BadResponse("An upstream response header is too long")
        self._limit(len(name) + len(value))
        self._headers.add(name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape"))

    def _limit(self, size: int) -> None:
        self._head_size += size
        if self._head_size > MAX_HEAD_SIZE:
            raise _BadResponse("The upstream response head is too long")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (101 is caught as an upgrade): wait for the real one
            return
        self._keep = self._parser.should_keep_alive()
        self._response = LeanResponse(self, status, self._reason, self._headers)
        head = self._head
        if head is not None and not head.done():
            head.set_result(self._response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        response = self._response
        if response is None:  # the end of an interim answer
            return
        self._busy = False
        response._finish()

    # -- used by LeanClient and LeanResponse --

    def _until_eof(self) -> bool:
        """Whether the body in progress ends with the connection (neither length nor chunked coding)."""
        headers = self._headers
        return hdrs.CONTENT_LENGTH not in headers and hdrs.TRANSFER_ENCODING not in headers

    def send(self, head: bytes, read_timeout: float) -> asyncio.Future[LeanResponse]:
        assert self.transport is not None
        self.read_timeout = read_timeout
        self._busy = True
        self._got_bytes = False
        self._response = None
        self._head = self.loop.create_future()
        self.transport.write(head)
        return self._head

    def _fail(self, error: BaseException) -> None:
        self._busy = False
        self._keep = False
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        if self._response is not None:
            self._response._finish(aiohttp.ClientPayloadError(f"Broken upstream body: {type(error).__name__}"))
        self.abandon()

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def abandon(self) -> None:
        """Close the connection; it is never reused."""
        self._keep = False
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def done(self, reusable: bool) -> None:
        """The exchange is over: back to the pool, or closed."""
        self.resume()
        self.client._busy -= 1
        if reusable and self._keep and not self._busy and not self.closed:
            self.used = True
            self._head = None
            self._response = None
            self.client._idle_push(self)
        else:
            self.abandon()


class _StaleConnection(aiohttp.ServerDisconnectedError):
    """A reused connection that the upstream had closed: nothing was answered."""


class LeanClient:
    """Pooled keep-alive connections for the lean path; open it inside the loop, close it after."""

    def __init__(self, limit: int = 512, keepalive: float = KEEPALIVE) -> None:
        self._limit = limit
        self._keepalive = keepalive
        self._busy = 0
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._closed = False

    async def request(self, target: Target, method: str, path_qs: str, headers: CIMultiDict[str], *,
                      connect_timeout: float, read_timeout: float) -> LeanResponse | None:
        """Send a bodiless `method path_qs` with `headers` to `target`; the answer once its head is in.

        None when the client is at its limit or closed: the caller takes another path. The caller
        must `release()` (or `close()`) the response."""
        if self._closed or self._busy >= self._limit:
            return None
        head = _head(target, method, path_qs, headers)
        self._busy += 1
        try:
            conn = self._idle_pop(target.key)
            if conn is not None:
                try:
                    return await _answer(conn, head, read_timeout)
                except _StaleConnection:
                    if method not in _IDEMPOTENT:
                        raise
            conn = await self._connect(target, connect_timeout)
            return await _answer(conn, head, read_timeout)
        except BaseException:
            self._busy -= 1
            raise

    async def _connect(self, target: Target, timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self, target.key, loop),
                                                       target.host, target.port)
        except TimeoutError as exc:
            raise aiohttp.ServerTimeoutError(f"Timeout connecting to {target.host}:{target.port}") from exc
        except OSError as exc:
            raise aiohttp.ClientOSError(exc.errno, f"Cannot connect to {target.host}:{target.port}") from exc
        return conn

    def _idle_pop(self, key: tuple[str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        expired = asyncio.get_running_loop().time() - self._keepalive
        while idle:
            conn = idle.pop()
            if not conn.closed and conn.idle_since > expired:
                return conn
            conn.abandon()
        return None

    def _idle_push(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if self._closed or len(idle) >= MAX_IDLE:
            conn.abandon()
            return
        conn.idle_since = conn.loop.time()
        idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        idle = self._idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)

    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    def in_use(self) -> int:
        """Requests sent on the lean path whose response has not been released."""
        return self._busy

    async def close(self) -> None:
        """Close the idle connections; busy ones close when their exchange ends."""
        self._closed = True
        for idle in self._idle.values():
            while idle:
                idle.pop().abandon()


async def _answer(conn: _Connection, head: bytes, read_timeout: float) -> LeanResponse:
    future = conn.send(head, read_timeout)
    timer = conn.loop.call_later(read_timeout, _head_timeout, conn, future)
    try:
        return await future
    except BaseException:
        conn.abandon()  # cancelled, timed out or failed: the connection's state is unknown
        raise
    finally:
        timer.cancel()


def _head_timeout(conn: _Connection, future: asyncio.Future[LeanResponse]) -> None:
    if not future.done():
        future.set_exception(aiohttp.ServerTimeoutError("Timeout on reading the upstream's response"))
    conn.abandon()


def _head(target: Target, method: str, path_qs: str, headers: CIMultiDict[str]) -> bytes:
    """The request head, as aiohttp would write it (Host first when it is the upstream's)."""
    lines = [f"{method} {target.prefix}{path_qs} HTTP/1.1"]
    if hdrs.HOST not in headers:
        lines.append(f"Host: {target.host_header}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if method not in _WITHOUT_BODY and hdrs.CONTENT_LENGTH not in headers:
        lines.append("Content-Length: 0")
    joined = "".join(lines)  # `in` finds one character with memchr; str.count walks the text char by char
    if "\n" in joined or "\r" in joined:
        raise ValueError("Newline or carriage return character detected in HTTP status message or header")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
