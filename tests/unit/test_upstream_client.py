"""LeanClient against scripted upstreams on loopback: keep-alive, retries, limits, and upstreams that misbehave.

Each upstream is a raw asyncio server whose script reads one request head and answers with exact bytes,
so the tests see what went over the wire and can misbehave in ways no HTTP framework would.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import aiohttp
import pytest
import uvloop
from multidict import CIMultiDict
from yarl import URL

from gateway.proxy import upstream as upstream_module
from gateway.proxy.upstream import LeanClient, LeanResponse, Target

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Upstream"], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


class Upstream:
    """A loopback server running `script` per connection; records request heads and connections."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.heads: list[bytes] = []
        self.connections = 0
        self.closed = asyncio.Event()  # set when a connection is closed by the client
        self.server: asyncio.Server | None = None

    async def start(self) -> Target:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        target = Target.for_url(URL(f"http://127.0.0.1:{port}"))
        assert target is not None
        return target

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.script(reader, writer, self)
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        """The next request head on this connection, or b"" when the client closed it."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            self.closed.set()
            return b""
        self.heads.append(head)
        return head

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Script], Awaitable[tuple[Upstream, Target]]]]:
    started: list[Upstream] = []

    async def start(script: Script) -> tuple[Upstream, Target]:
        upstream = Upstream(script)
        started.append(upstream)
        return upstream, await upstream.start()

    yield start
    for upstream in started:
        await upstream.stop()


@pytest.fixture
async def client() -> AsyncIterator[LeanClient]:
    lean = LeanClient()
    yield lean
    await lean.close()


def answering(*answers: bytes) -> Script:
    """Answer successive requests on a connection with `answers`, then keep reading until it closes."""
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        for answer in answers:
            if not await up.head(reader):
                return
            writer.write(answer)
            await writer.drain()
        await up.head(reader)
    return script


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
    """Read the request, never answer, notice when the client closes."""
    if await up.head(reader):
        await up.head(reader)


def forever_ok() -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        while await up.head(reader):
            writer.write(OK)
            await writer.drain()
    return script


async def get(client: LeanClient, target: Target, path: str = "/", method: str = "GET",
              headers: CIMultiDict[str] | None = None, read_timeout: float = 5.0) -> LeanResponse:
    response = await client.request(target, method, path, headers if headers is not None else CIMultiDict(),
                                    connect_timeout=5.0, read_timeout=read_timeout)
    assert response is not None
    return response


async def body(response: LeanResponse) -> bytes:
    parts = [response.read_nowait()]
    while chunk := await response.read(64 * 1024):
        parts.append(chunk)
    return b"".join(parts)


# --- what goes over the wire -------------------------------------------------------------------------


async def test_request_head_is_what_aiohttp_would_send(serve, client: LeanClient) -> None:
    up, target = await serve(forever_ok())
    response = await get(client, target, "/a%2Fb?q=1&q=2", headers=CIMultiDict([("X-A", "1"), ("X-A", "2")]))
    assert (response.status, response.reason, await body(response)) == (200, "OK", b"hello")
    response.release()
    await (await get(client, target, "/p", method="POST")).read(1)
    await (await get(client, target, "/h", headers=CIMultiDict(Host="app.example"))).read(1)
    port = target.port
    assert up.heads == [
        f"GET /a%2Fb?q=1&q=2 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-A: 1\r\nX-A: 2\r\n\r\n".encode(),
        f"POST /p HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n".encode(),
        b"GET /h HTTP/1.1\r\nHost: app.example\r\n\r\n",
    ]


def test_target_takes_plain_http_only() -> None:
    assert Target.for_url(URL("https://h:1")) is None
    assert Target.for_url(URL("http://user:pw@h:1")) is None
    plain = Target.for_url(URL("http://h/base/"))
    assert plain is not None and (plain.host, plain.port, plain.host_header, plain.prefix) == ("h", 80, "h", "/base")
    v6 = Target.for_url(URL("http://[::1]:8080"))
    assert v6 is not None and (v6.host, v6.host_header) == ("::1", "[::1]:8080")


@pytest.mark.parametrize("value", ["a\r\nX-Evil: 1", "a\nb", "a\rb"])
async def test_cr_or_lf_in_a_header_is_refused_before_anything_is_sent(serve, client: LeanClient,
                                                                       value: str) -> None:
    up, target = await serve(forever_ok())
    with pytest.raises(ValueError, match="Newline or carriage return"):
        await client.request(target, "GET", "/", CIMultiDict({"X-A": value}), connect_timeout=1, read_timeout=1)
    assert (up.connections, client.in_use()) == (0, 0)


async def test_raw_header_bytes_pass_through(serve, client: LeanClient) -> None:
    up, target = await serve(forever_ok())
    raw = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")  # as aiohttp's server hands over obs-text
    (await get(client, target, headers=CIMultiDict({"X-Raw": raw}))).release()
    assert b"X-Raw: caf\xe9 \xff\r\n" in up.heads[0]


# --- keep-alive ---------------------------------------------------------------------------------------


async def test_connection_is_reused_after_a_complete_answer(serve, client: LeanClient) -> None:
    up, target = await serve(forever_ok())
    for _ in range(3):
        response = await get(client, target)
        assert await body(response) == b"hello"
        response.release()
    assert (up.connections, client.idle_connections(), client.in_use()) == (1, 1, 0)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
], ids=["connection-close", "http-1.0"])
async def test_connection_not_kept_when_the_upstream_says_so(serve, client: LeanClient, answer: bytes) -> None:
    up, target = await serve(answering(answer, answer))
    for _ in range(2):
        response = await get(client, target)
        assert await body(response) == b"hello"
        response.release()
    assert up.connections == 2


async def test_unread_body_closes_the_connection(serve, client: LeanClient) -> None:
    partial = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", OK)

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await (partial if up.connections == 1 else forever_ok())(reader, writer, up)

    up, target = await serve(script)
    response = await get(client, target)  # half the body is still to come: never reuse this connection
    response.release()
    await up.closed.wait()
    assert client.idle_connections() == 0
    response = await get(client, target)
    assert await body(response) == b"hello"
    assert up.connections == 2


async def test_idle_connections_expire(serve) -> None:
    up, target = await serve(forever_ok())
    client = LeanClient(keepalive=0)
    try:
        for _ in range(2):
            (await get(client, target)).release()
        assert up.connections == 2
    finally:
        await client.close()


async def test_bytes_sent_unasked_make_the_connection_unusable(serve, client: LeanClient) -> None:
    up, target = await serve(answering(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nevil", OK))
    response = await get(client, target)
    assert await body(response) == b"hello"
    response.release()
    response = await get(client, target)
    assert await body(response) == b"hello"  # from a new connection, not the smuggled answer
    assert up.connections == 2


async def test_stale_connection_is_retried_for_idempotent_requests_only(serve, client: LeanClient) -> None:
    async def close_after_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        if await up.head(reader):
            writer.write(OK)
            await writer.drain()
        if up.connections < 3:
            await up.head(reader)  # takes the second request and closes without an answer
            return
        await forever_ok()(reader, writer, up)

    up, target = await serve(close_after_first)
    (await get(client, target)).release()
    response = await get(client, target, "/again")  # sent on the reused connection, retried on a new one
    assert await body(response) == b"hello"
    response.release()
    assert [h.split(b" ")[1] for h in up.heads] == [b"/", b"/again", b"/again"]

    up2, target2 = await serve(close_after_first)
    (await get(client, target2)).release()
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await get(client, target2, "/post", method="POST")
    assert [h.split(b" ")[1] for h in up2.heads] == [b"/", b"/post"]
    assert client.in_use() == 0


# --- answers -------------------------------------------------------------------------------------------


async def test_interim_answers_are_skipped(serve, client: LeanClient) -> None:
    up, target = await serve(answering(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                                       b"HTTP/1.1 100 Continue\r\n\r\n"
                                       b"HTTP/1.1 201 Created\r\nX-Final: 1\r\nContent-Length: 2\r\n\r\nok"))
    response = await get(client, target)
    assert (response.status, response.reason, await body(response)) == (201, "Created", b"ok")
    assert dict(response.headers) == {"X-Final": "1", "Content-Length": "2"}


async def test_chunked_body_is_decoded_and_repeated_headers_kept(serve, client: LeanClient) -> None:
    up, target = await serve(answering(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nTransfer-Encoding: chunked\r\nSet-Cookie: b=2\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", OK))
    response = await get(client, target)
    assert response.headers.getall("Set-Cookie") == ["a=1", "b=2"]
    assert await body(response) == b"hello world"
    response.release()
    (await get(client, target)).release()
    assert up.connections == 1


async def test_body_until_close(serve, client: LeanClient) -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await up.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        writer.close()

    up, target = await serve(until_close)
    response = await get(client, target)
    assert await body(response) == b"part one, part two"
    assert response.exception() is None


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses_keep_the_connection(serve, client: LeanClient, status: int) -> None:
    up, target = await serve(answering(f"HTTP/1.1 {status} X\r\nETag: \"v\"\r\n\r\n".encode(), OK))
    response = await get(client, target)
    assert (response.status, await body(response)) == (status, b"")
    response.release()
    assert await body(await get(client, target)) == b"hello"
    assert up.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * 9000 + b"\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"y" * 4000) for i in range(20)) + b"\r\n",
    b"NOT HTTP AT ALL\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
], ids=["long-header", "long-head", "garbage", "unasked-upgrade"])
async def test_bad_answers_fail_the_request(serve, client: LeanClient, answer: bytes) -> None:
    up, target = await serve(answering(answer))
    with pytest.raises(aiohttp.ClientError) as failed:
        await get(client, target)
    assert not isinstance(failed.value, TimeoutError)
    await up.closed.wait()
    assert (client.in_use(), client.idle_connections()) == (0, 0)


async def test_truncated_body_is_a_payload_error(serve, client: LeanClient) -> None:
    async def truncated(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await up.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    up, target = await serve(truncated)
    response = await get(client, target)
    assert response.read_nowait() == b"only this"
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read(10)
    response.release()
    assert client.in_use() == 0


# --- failures and limits -------------------------------------------------------------------------------


@pytest.fixture
def refused_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


async def test_refused_connection(client: LeanClient, refused_port: int) -> None:
    target = Target.for_url(URL(f"http://127.0.0.1:{refused_port}"))
    assert target is not None
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(client, target)
    assert client.in_use() == 0


async def test_no_answer_times_out_and_closes(serve, client: LeanClient) -> None:
    up, target = await serve(silent)
    with pytest.raises(aiohttp.ServerTimeoutError):
        await get(client, target, read_timeout=0.2)
    await up.closed.wait()
    assert client.in_use() == 0


async def test_stalled_body_times_out(serve, client: LeanClient) -> None:
    up, target = await serve(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhe"))
    response = await get(client, target, read_timeout=0.2)
    assert response.read_nowait() == b"he"
    with pytest.raises(aiohttp.ServerTimeoutError):
        await response.read(10)
    response.release()
    await up.closed.wait()


async def test_cancelled_request_closes_its_connection(serve, client: LeanClient) -> None:
    up, target = await serve(silent)
    task = asyncio.ensure_future(get(client, target))
    while not up.heads:
        await asyncio.sleep(0)  # yield until the upstream has the request (a wait, not a timing)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await up.closed.wait()
    assert client.in_use() == 0


async def test_limit_sends_the_caller_elsewhere(serve) -> None:
    up, target = await serve(forever_ok())
    client = LeanClient(limit=1)
    try:
        held = await get(client, target)
        assert await client.request(target, "GET", "/", CIMultiDict(), connect_timeout=1, read_timeout=1) is None
        held.release()
        (await get(client, target)).release()
        await client.close()
        assert await client.request(target, "GET", "/", CIMultiDict(), connect_timeout=1, read_timeout=1) is None
        await up.closed.wait()  # close() closed the idle connection
    finally:
        await client.close()


async def test_reading_pauses_while_the_body_waits(serve, client: LeanClient, monkeypatch) -> None:
    size = 4 * 1024 * 1024

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: Upstream) -> None:
        await up.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        for _ in range(size // 65536):
            writer.write(b"z" * 65536)
            await writer.drain()
        await up.head(reader)

    most = 0
    feed = LeanResponse._feed

    def watched(self: LeanResponse, data: bytes) -> None:
        nonlocal most
        feed(self, data)
        most = max(most, self._size)

    monkeypatch.setattr(LeanResponse, "_feed", watched)
    up, target = await serve(big)
    response = await get(client, target)
    received = len(response.read_nowait())
    while chunk := await response.read(16 * 1024):
        received += len(chunk)
        await asyncio.sleep(0.001)  # a slow reader: the upstream must be held back, not buffered
    assert received == size
    # Reading stops above the high-water mark; what the socket already had in hand may still arrive.
    assert most < upstream_module._HIGH_WATER + 1024 * 1024
    response.release()
    assert client.idle_connections() == 1


def test_works_on_uvloop() -> None:
    async def exchange() -> tuple[int, bytes, int]:
        up = Upstream(forever_ok())
        target = await up.start()
        client = LeanClient()
        try:
            for _ in range(2):
                response = await get(client, target)
                data = await body(response)
                response.release()
            return response.status, data, up.connections
        finally:
            await client.close()
            await up.stop()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(exchange()) == (200, b"hello", 1)
