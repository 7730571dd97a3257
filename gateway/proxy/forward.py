"""Forwarder: stream a request to its upstream and the answer back.

Trusted: `request[IDENTITY]`, set by auth_middleware after verification (None on public paths), and
the transport's peer address; the headers sent upstream are built by gateway.proxy.headers. A path
with `.` or `..` segments (also `%2e`-encoded or `..;x`) is rejected with 400: the access policy
matched the path as written, and an upstream that normalises it would serve another one.

A bodiless request other than HEAD to a plain-http upstream goes out through the lean client
(gateway.proxy.upstream, which keeps aiohttp's client behaviour at a fraction of its cost); bodies,
HEAD, websockets, https upstreams and requests beyond the lean client's connection limit use
aiohttp's ClientSession.

Bodies are streamed both ways in CHUNK_SIZE pieces under aiohttp's flow control, never buffered; a
body over max_body_size is refused with 413. The server in front must run with
`auto_decompress=False` (gateway.app.SERVER_OPTIONS), or aiohttp would hand over a decoded request
body under the client's Content-Encoding and Content-Length. Websocket upgrades are relayed message
by message (gateway.proxy.websocket); on an upstream with `websockets: false` an upgrade is a 400.

`Expect: 100-continue`: the proxy route is registered with `expect_later` instead of aiohttp's
handler (which answers 100 before any check runs), and the 100 is sent here, once the request has
passed authentication, the access policy and the size check: a client is never invited to upload a
body that is then refused.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from time import perf_counter

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict
from yarl import URL

from gateway.auth.assertion import IdentityAssertion
from gateway.auth.identity import IDENTITY
from gateway.auth.policy import has_dot_segment
from gateway.errors import BadRequest, NotFound, PayloadTooLarge, UpstreamError, UpstreamTimeout
from gateway.proxy.headers import REQUEST_ID, IdentityHeaders, downstream_headers, upstream_headers
from gateway.proxy.routes import Route, UpstreamTable
from gateway.proxy.upstream import LeanClient, LeanResponse
from gateway.proxy.websocket import splice

__all__ = ["CHUNK_SIZE", "Forwarder", "UpstreamObserver", "expect_later", "upstream_client_session"]

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024

# (upstream origin, status or "error", seconds to the response headers or None): gateway.web's metrics.
UpstreamObserver = Callable[[str, str, float | None], None]

# aiohttp's client adds these when absent; a transparent proxy must not invent them.
_SKIP_AUTO_HEADERS = frozenset({hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE})
_EMPTY_BODY_STATUSES = frozenset({204, 304})
# aiohttp's own test: the cleanup of closed TLS transports is only needed before these CPython fixes.
_NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)


class _UpstreamRequest(aiohttp.ClientRequest):
    """aiohttp's ClientRequest for the upstream session, whose skip_auto_headers covers every header
    aiohttp would add by itself: with that set, adding none is the whole of update_auto_headers, so
    it is done without aiohttp's per-request sort, multidict build and header copy (profiled ~1.5% of
    a proxied request). Any other skip set takes aiohttp's own path."""

    def update_auto_headers(self, skip_auto_headers: Iterable[str] | None) -> None:
        if skip_auto_headers != _SKIP_AUTO_HEADERS:
            super().update_auto_headers(skip_auto_headers)
            return
        self._skip_auto_headers = _SKIPPED  # read, never written, by the rest of ClientRequest


_SKIPPED: CIMultiDict[None] = CIMultiDict((name, None) for name in sorted(_SKIP_AUTO_HEADERS))
# Our shortcut is only right while aiohttp's automatic headers are among the skipped ones.
_AUTO_HEADERS_COVERED = {*aiohttp.ClientRequest.DEFAULT_HEADERS, hdrs.USER_AGENT} <= _SKIP_AUTO_HEADERS


def upstream_client_session(limit: int = 512,
                            trace_configs: list[aiohttp.TraceConfig] | None = None) -> aiohttp.ClientSession:
    """The pooled keep-alive session for upstreams; call inside a running loop and close it after.

    `trace_configs` observe each upstream request; the gateway itself times them in the Forwarder
    (`on_upstream`), which costs far less per request than aiohttp's trace signals."""
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=10,
                                     enable_cleanup_closed=_NEEDS_CLEANUP_CLOSED)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,  # bodies pass through as the upstream encoded them
        timeout=aiohttp.ClientTimeout(total=None),  # every request passes its route's timeout
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        trust_env=False,  # never route upstream traffic through HTTP(S)_PROXY from the environment
        trace_configs=trace_configs,
        request_class=_UpstreamRequest if _AUTO_HEADERS_COVERED else aiohttp.ClientRequest,
    )


# --- the handler -----------------------------------------------------------------------------


_HTTP11 = aiohttp.HttpVersion11


async def expect_later(request: web.Request) -> None:
    """The proxy route's expect handler: no 100 Continue yet (the Forwarder sends it)."""


class Forwarder:
    """The proxy handler: `await forwarder(request)` streams `request` to its upstream."""

    def __init__(self, routes: UpstreamTable, http: aiohttp.ClientSession, *,
                 cookie_names: frozenset[str], forwarded_proto: str, max_body_size: int = 0,
                 identity_headers: IdentityHeaders | None = None,
                 assertion: IdentityAssertion | None = None,
                 on_upstream: UpstreamObserver | None = None, lean: LeanClient | None = None) -> None:
        self._routes = routes
        self._lean = lean  # the lean path for bodiless requests to plain-http upstreams
        self._on_upstream = on_upstream
        self._origins: dict[int, tuple[Route, str]] = {}  # id(route) -> (route, origin label)
        self._assertion = assertion  # the signed identity header, when identity_assertion is enabled
        self._identity_headers = identity_headers or IdentityHeaders()
        self._http = http
        self._cookie_names = frozenset(cookie_names)
        self._proto = forwarded_proto
        self._max_body = max_body_size  # 0: unlimited

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        route = self._routes.match(request.path)
        if route is None:
            raise NotFound()
        if has_dot_segment(request.path):
            raise BadRequest("Dot segments (. or ..) are not allowed in the path.")
        websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if websocket and not route.upstream.websockets:
            raise BadRequest("Websockets are not enabled for this path.")
        headers = upstream_headers(request.headers, request.get(IDENTITY), cookie_names=self._cookie_names,
                                   peer=request.remote, forwarded_proto=self._proto,
                                   pass_host=route.upstream.pass_host_header, websocket=websocket,
                                   request_id=request.get(REQUEST_ID), mapping=self._identity_headers)
        if self._assertion is not None:
            self._assertion.apply(headers, request.get(IDENTITY))
        if websocket:
            url = route.url_for(request.rel_url.raw_path, request.rel_url.raw_query_string)
            return await self._websocket(request, route, url, headers)
        body = self._body(request)
        if body is not None and request.version >= _HTTP11 and \
                request.headers.get(hdrs.EXPECT, "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        started = perf_counter()
        upstream: aiohttp.ClientResponse | LeanResponse | None = None
        try:
            if body is None and route.lean is not None and self._lean is not None and \
                    request.method != hdrs.METH_HEAD:
                raw = request.rel_url
                upstream = await self._lean.request(
                    route.lean, request.method, raw.raw_path_qs, headers,
                    connect_timeout=route.upstream.connect_timeout, read_timeout=route.upstream.read_timeout)
            if upstream is None:
                url = route.url_for(request.rel_url.raw_path, request.rel_url.raw_query_string)
                upstream = await self._http.request(
                    request.method, url, headers=headers, allow_redirects=False, timeout=route.timeout, data=body,
                )
        except (TimeoutError, aiohttp.ClientError) as exc:  # aiohttp's timeouts are TimeoutErrors
            self._observe(route, "error", None)
            if isinstance(body, _LimitedBody) and body.exceeded:
                raise PayloadTooLarge() from exc
            if isinstance(exc, TimeoutError):
                log.error("upstream timed out", extra={"upstream": route.upstream.path})
                raise UpstreamTimeout() from exc
            log.error("upstream unreachable: %s", type(exc).__name__, extra={"upstream": route.upstream.path})
            raise UpstreamError() from exc
        except BaseException:  # cancelled (the client went away): the attempt ended without a response
            self._observe(route, "error", None)
            raise
        self._observe(route, str(upstream.status), perf_counter() - started)
        try:
            return await self._relay(request, upstream, route)
        finally:
            # After a complete body this returns the connection to the pool; otherwise the
            # connection is closed (aiohttp never reuses one with unread payload).
            upstream.release()

    def _observe(self, route: Route, status: str, seconds: float | None) -> None:
        """Report one upstream attempt: status (or "error": no response) and time to response headers."""
        if self._on_upstream is None:
            return
        known = self._origins.get(id(route))
        if known is None or known[0] is not route:
            base = route.base_url
            known = self._origins[id(route)] = (route, f"{base.scheme}://{base.host}:{base.port}")
        self._on_upstream(known[1], status, seconds)

    def _body(self, request: web.Request) -> aiohttp.StreamReader | _LimitedBody | None:
        if not request.body_exists:
            return None
        if not self._max_body:
            return request.content
        if request.content_length is not None:
            if request.content_length > self._max_body:
                raise PayloadTooLarge()
            return request.content
        return _LimitedBody(request.content, self._max_body)

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse | LeanResponse,
                     route: Route) -> web.StreamResponse:
        content = upstream.content
        bodyless = request.method == hdrs.METH_HEAD or upstream.status in _EMPTY_BODY_STATUSES
        # What arrived with the upstream's headers leaves with ours in one write: a small body whole,
        # a larger one's first part. A body not begun yet is streamed, its headers sent at once.
        first = b"" if bodyless or content.exception() is not None else content.read_nowait()
        whole = content.is_eof() and content.exception() is None
        response = (_HeldHeaders if whole or first else web.StreamResponse)(status=upstream.status,
                                                                             reason=upstream.reason)
        downstream_headers(upstream.headers, into=response.headers)
        try:
            await response.prepare(request)
            if bodyless or whole:
                await response.write_eof(first)
                return response
            if first:
                await response.write(first)
            while True:
                try:
                    chunk = await content.read(CHUNK_SIZE)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    # The status is out: all we can do is cut the client off so that it sees an
                    # incomplete body (a clean end would pass a truncated body off as whole).
                    log.warning("upstream failed mid-response: %s", type(exc).__name__,
                                extra={"upstream": route.upstream.path})
                    upstream.close()
                    if request.transport is not None:
                        request.transport.abort()
                    return response
                if not chunk:
                    break
                await response.write(chunk)
            await response.write_eof()
        except ConnectionError:  # the client went away; release() in __call__ drops the upstream
            upstream.close()
        return response

    async def _websocket(self, request: web.Request, route: Route, url: URL,
                         headers: CIMultiDict[str]) -> web.StreamResponse:
        offered = tuple(filter(None, (p.strip() for p in
                                      request.headers.get(hdrs.SEC_WEBSOCKET_PROTOCOL, "").split(","))))
        if not web.WebSocketResponse(protocols=offered).can_prepare(request).ok:
            raise BadRequest("The websocket handshake is not valid.")
        started = perf_counter()
        try:
            # ws_connect has no connect/read split: bound the whole handshake by both.
            async with asyncio.timeout(route.upstream.connect_timeout + route.upstream.read_timeout):
                upstream = await self._http.ws_connect(url, headers=headers, protocols=offered,
                                                       autoclose=False, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            self._observe(route, str(exc.status), perf_counter() - started)  # the upstream did answer
            if 400 <= exc.status < 600:  # the upstream refused the upgrade: pass its verdict on
                return web.Response(status=exc.status)
            log.error("upstream websocket handshake failed", extra={"upstream": route.upstream.path})
            raise UpstreamError() from exc
        except TimeoutError as exc:
            self._observe(route, "error", None)
            log.error("upstream timed out", extra={"upstream": route.upstream.path})
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            self._observe(route, "error", None)
            log.error("upstream unreachable: %s", type(exc).__name__, extra={"upstream": route.upstream.path})
            raise UpstreamError() from exc
        except BaseException:
            self._observe(route, "error", None)
            raise
        self._observe(route, "101", perf_counter() - started)
        try:
            client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (),
                                           autoclose=False, autoping=True)
            await client.prepare(request)
            await splice(client, upstream)
            return client
        finally:
            await upstream.close()


class _HeldHeaders(web.StreamResponse):
    """Headers held back until the first body bytes are written, so that both leave in one write."""

    _send_headers_immediately = False


class _LimitedBody:
    """A chunked request body, cut off (and flagged) once it crosses max_body_size."""

    def __init__(self, content: aiohttp.StreamReader, limit: int) -> None:
        self._content = content
        self._limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._content.iter_chunked(CHUNK_SIZE):
            seen += len(chunk)
            if seen > self._limit:
                self.exceeded = True
                raise PayloadTooLarge()
            yield chunk


