"""How connections are served: aiohttp's protocol with a request-head deadline and honest refusals.

aiohttp alone answers every unparsable request with 400, echoes a piece of the offending line in
the body, and logs it with a traceback (a header line may hold a token). GatewayProtocol instead:

* answers 431 for a header field over `max_header_size` or more than aiohttp's 128 header lines,
  414 for a request target over it, 400 for anything else malformed; each as a small fixed page
  (HTML when the request head asked for text/html, else the JSON error shape) with the security
  headers and a request id, and closes the connection;
* logs one line per refusal naming its kind, never the bytes received;
* closes a connection whose request head is not complete `header_timeout` seconds after the
  connection opened or, on a kept-alive connection, after the head's first byte (slow clients,
  "slowloris"). Idle kept-alive connections are bounded by aiohttp's keep-alive timeout; bodies are
  not affected (a handler reads them under its own timeouts).

`serve()` runs an app with it the way aiohttp's run_app does: until GracefulExit (SIGTERM/SIGINT),
then the runner's clean-up, which drains in-flight requests for `shutdown_timeout`.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from contextlib import suppress
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo

from gateway.web.pages import SECURITY_HEADERS
from gateway.web.request_id import HEADER, new_request_id

__all__ = ["GatewayRunner", "serve"]

log = logging.getLogger(__name__)

KEEPALIVE_TIMEOUT = 75.0  # aiohttp's run_app default; nginx uses 75 s too

# status, error code, what the reader is told
_REFUSALS = {
    400: ("bad_request", "The request could not be parsed."),
    414: ("uri_too_long", "The request URL is too long."),
    431: ("request_header_fields_too_large",
          "The request headers are too large. Clearing this site's cookies usually helps."),
}
_PAGE = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
         '<body><h1>{title}</h1><p>{text}</p><p>Request ID: <code>{rid}</code></p></body></html>')


def _status_of(exc: BaseException | None, head: bytes) -> int:
    if isinstance(exc, LineTooLong):
        return 414 if _is_target(exc, head) else 431
    if isinstance(exc, BadHttpMessage) and exc.message == "Too many headers received":
        return 431
    return 400


def _is_target(exc: LineTooLong, head: bytes) -> bool:
    """Did the request target overflow? aiohttp reports the first 100 bytes of the overlong line, so
    compare them with the target in the chunk that failed (a head in one chunk: the request line)."""
    first_line = head.split(b"\n", 1)[0]
    parts = first_line.split(b" ", 2)
    excerpt = exc.args[0] if exc.args and isinstance(exc.args[0], bytes) else b""
    excerpt = excerpt.removesuffix(b"...")
    return len(parts) > 1 and bool(parts[1]) and (excerpt.startswith(parts[1][:100]) or parts[1].startswith(excerpt))


def _refusal(status: int, head: bytes) -> web.Response:
    code, text = _REFUSALS[status]
    rid = new_request_id()
    headers = {**SECURITY_HEADERS, HEADER: rid}
    if b"text/html" in head:
        title = f"{status} {code.replace('_', ' ').capitalize()}"
        response = web.Response(status=status, text=_PAGE.format(title=title, text=text, rid=rid),
                                content_type="text/html", headers=headers)
    else:
        body = json.dumps({"error": code, "error_description": text, "request_id": rid})
        response = web.Response(status=status, text=body, content_type="application/json", headers=headers)
    response.force_close()
    return response


class GatewayProtocol(RequestHandler):
    __slots__ = ("_head_deadline", "_head_timer", "_head")

    def __init__(self, manager: _Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._head_deadline = manager.header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head = b""  # the chunk in which a request head failed to parse (for its refusal)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # A new head starts when no request is queued or being handled (else: body or pipelined bytes).
        new_head = self._head_timer is None and self._current_request is None and not self._messages
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a complete head, or a parse error: the deadline is met
            self._stop_head_timer()
            self._head = data if isinstance(self._messages[-1][0], _ErrInfo) else b""
        elif new_head:
            self._start_head_timer()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        status = _status_of(exc, self._head)
        log.warning("refused a malformed request from %s: %s (%s)", request.remote, _REFUSALS[status][0],
                    type(exc).__name__)
        return _refusal(status, self._head)

    def _start_head_timer(self) -> None:
        if self._head_deadline > 0 and self._head_timer is None:
            self._head_timer = self._loop.call_later(self._head_deadline, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._current_request is None and not self._messages and self.transport is not None:
            log.info("closed a connection from %s: no complete request head within %gs",
                     self.transport.get_extra_info("peername"), self._head_deadline)
            self.force_close()
            self.transport.close()


class _Server(web.Server):
    """aiohttp's Server, building GatewayProtocol connections."""

    def __init__(self, base: web.Server, header_timeout: float) -> None:
        super().__init__(base.request_handler, request_factory=base.request_factory,
                         handler_cancellation=base.handler_cancellation, loop=base._loop, **base._kwargs)
        self.header_timeout = header_timeout

    def __call__(self) -> GatewayProtocol:
        return GatewayProtocol(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """AppRunner whose connections are GatewayProtocols; `header_timeout` in seconds, 0 = none."""

    __slots__ = ("_header_timeout",)

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> web.Server:
        return _Server(await super()._make_server(), self._header_timeout)


def serve(app: web.Application, *, loop: asyncio.AbstractEventLoop, host: str, port: int,
          reuse_port: bool | None, header_timeout: float, **runner_options: Any) -> None:
    """Serve `app` on host:port until GracefulExit or KeyboardInterrupt, then clean up and close `loop`.
    `runner_options` go to the runner (shutdown_timeout, handle_signals, access log, parser limits)."""
    runner = GatewayRunner(app, header_timeout=header_timeout, keepalive_timeout=KEEPALIVE_TIMEOUT,
                           **runner_options)

    async def run() -> None:
        await runner.setup()
        # Everything built at start-up lives as long as the process: keep it out of the cyclic
        # collector's full passes, which otherwise walk it all every few thousand requests.
        gc.collect()
        gc.freeze()
        try:
            await web.TCPSite(runner, host, port, reuse_port=reuse_port).start()
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    main = loop.create_task(run())
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        if not main.done():
            main.cancel()
            with suppress(asyncio.CancelledError):
                loop.run_until_complete(main)
        _cancel_all(loop)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
