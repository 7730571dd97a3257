"""Forwarder: stream a request to its upstream and the answer back; the header trust boundary.

Trusted: `request[IDENTITY]`, set by auth_middleware after verification (None on public paths), and
the transport's peer address. Everything else the client sends is input, and before forwarding:

* hop-by-hop headers (RFC 9110 §7.6.1: Connection and every header it names, Keep-Alive,
  Proxy-Authenticate, Proxy-Authorization, TE, Trailer(s), Transfer-Encoding, Upgrade,
  Proxy-Connection) are removed in both directions; so is Expect (the gateway answers
  `100-continue` itself);
* every client header named `X-Auth-Request-*` is removed, always, and so is a client
  `Authorization` when an identity is present. Names are compared case-insensitively with `_` read as
  `-`, because CGI/WSGI upstreams map `X_Auth_Request_User` to the same variable;
* the gateway owns the forwarding headers: a client `X-Forwarded-For` is kept and the peer address
  appended (the upstream must trust only the last hop); every other `X-Forwarded-*`, `Forwarded`
  and `X-Real-IP` from the client is dropped, then X-Forwarded-Proto/-Host and X-Real-IP are set;
* the gateway's own cookies never leave it (interface.md, "What the upstream receives");
* a path with `.` or `..` segments (also `%2e`-encoded or `..;x`) is rejected with 400: the access
  policy matched the path as written, and an upstream that normalises it would serve another one.

Identity values (claims come from the OP) are sanitised: control characters (C0, DEL, C1; hence
CR/LF/NUL) are removed, non-ASCII is kept and sent as UTF-8, and a value longer than
MAX_HEADER_VALUE bytes is omitted rather than truncated (a truncated name could be someone else's);
groups are comma-joined, so a group whose name contains a comma is left out, and the list stops at
the last whole group that fits.

Bodies are streamed both ways in CHUNK_SIZE pieces under aiohttp's flow control, never buffered.
The server in front must run with `auto_decompress=False` (AppRunner/run_app keyword), or aiohttp
would hand over a decoded request body under the client's Content-Encoding and Content-Length.
Websocket upgrades are relayed message by message (ws_connect upstream); on an upstream with
`websockets: false` an upgrade request is answered 400.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Iterable

import aiohttp
from aiohttp import WSMsgType, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.auth.identity import IDENTITY, Identity
from gateway.errors import PayloadTooLarge, UpstreamError, UpstreamTimeout
from gateway.proxy.routes import Route, UpstreamTable

__all__ = [
    "CHUNK_SIZE",
    "MAX_HEADER_VALUE",
    "Forwarder",
    "downstream_headers",
    "identity_headers",
    "strip_cookies",
    "upstream_client_session",
    "upstream_headers",
]

log = logging.getLogger(__name__)

CHUNK_SIZE = 64 * 1024
MAX_HEADER_VALUE = 8 * 1024  # bytes, UTF-8 encoded

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "proxy-connection",
})
_AUTH_PREFIX = "x-auth-request-"
_XFF = "x-forwarded-for"
_GATEWAY_OWNED = frozenset({"forwarded", "x-real-ip"})  # plus every x-forwarded-* but X-Forwarded-For
_WS_HANDSHAKE = frozenset({
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
    "sec-websocket-accept",
})
# aiohttp's client adds these when absent; a transparent proxy must not invent them.
_SKIP_AUTO_HEADERS = frozenset({hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE})
# C0 controls, DEL and C1 controls: deleted from identity values (CR/LF would split the header).
_CONTROL_CHARS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])
_EMPTY_BODY_STATUSES = frozenset({204, 304})
# aiohttp's own test: the cleanup of closed TLS transports is only needed before these CPython fixes.
_NEEDS_CLEANUP_CLOSED = sys.version_info < (3, 12, 8) or (3, 13, 0) <= sys.version_info < (3, 13, 1)
_SENDABLE_CLOSE_ABNORMAL = 1011  # RFC 6455 §7.4.1: 1005/1006/1015 must never be sent in a frame


def upstream_client_session(limit: int = 512) -> aiohttp.ClientSession:
    """The pooled keep-alive session for upstreams; call inside a running loop and close it after."""
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=10,
                                     enable_cleanup_closed=_NEEDS_CLEANUP_CLOSED)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,  # bodies pass through as the upstream encoded them
        timeout=aiohttp.ClientTimeout(total=None),  # every request passes its route's timeout
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        trust_env=False,  # never route upstream traffic through HTTP(S)_PROXY from the environment
    )


# --- header transformation (pure) ---------------------------------------------------------------


def _clean(value: str) -> str | None:
    """`value` without control characters, or None when empty or longer than MAX_HEADER_VALUE."""
    value = value.translate(_CONTROL_CHARS)
    if not value:
        return None
    size = len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass"))
    return value if size <= MAX_HEADER_VALUE else None


def _groups_value(groups: Iterable[str]) -> str | None:
    kept: list[str] = []
    budget = MAX_HEADER_VALUE
    for group in groups:
        name = group.translate(_CONTROL_CHARS)
        if not name or "," in name:
            continue  # a comma inside a name would read as two groups upstream
        cost = len(name.encode("utf-8", "surrogatepass")) + (1 if kept else 0)
        if cost > budget:
            break
        kept.append(name)
        budget -= cost
    return ",".join(kept) or None


def identity_headers(identity: Identity) -> dict[str, str]:
    """The X-Auth-Request-* and Authorization headers that describe `identity` to an upstream."""
    out: dict[str, str] = {}
    for name, raw in (("X-Auth-Request-User", identity.sub), ("X-Auth-Request-Email", identity.email),
                      ("X-Auth-Request-Preferred-Username", identity.username)):
        if raw:
            value = _clean(raw)
            if value is None:
                log.warning("identity header omitted: empty or too long", extra={"header": name})
            else:
                out[name] = value
    if identity.groups:
        groups = _groups_value(identity.groups)
        if groups is not None:
            out["X-Auth-Request-Groups"] = groups
    if identity.access_token:
        bearer = _clean("Bearer " + identity.access_token)
        if bearer is None:
            log.warning("identity header omitted: empty or too long", extra={"header": "Authorization"})
        else:
            out["Authorization"] = bearer
    return out


def strip_cookies(value: str, names: frozenset[str]) -> str | None:
    """A Cookie header value without the cookies in `names`; None when nothing is left.

    When nothing is removed the value is returned unchanged, byte for byte.
    """
    if not names or not any(name in value for name in names):
        return value
    kept = []
    removed = False
    for part in value.split(";"):
        pair = part.strip()
        if not pair:
            continue
        if pair.partition("=")[0].strip() in names:
            removed = True
        else:
            kept.append(pair)
    if not removed:
        return value
    return "; ".join(kept) or None


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    values = headers.getall(hdrs.CONNECTION, ())
    if not values:
        return frozenset()
    return frozenset(token.strip().lower() for value in values for token in value.split(","))


def upstream_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    identity: Identity | None,
    *,
    cookie_names: frozenset[str],
    peer: str | None,
    forwarded_proto: str,
    pass_host: bool = False,
    websocket: bool = False,
) -> CIMultiDict[str]:
    """The headers to send upstream for a client request with `headers` (see the module docstring).

    `peer` is the client's address (appended to X-Forwarded-For); `pass_host` keeps the client's
    Host (otherwise the HTTP client sets the upstream's); `websocket` also drops the client's
    handshake headers, which the upstream handshake generates afresh.
    """
    connection = _connection_tokens(headers)
    chunked = hdrs.TRANSFER_ENCODING in headers
    out: CIMultiDict[str] = CIMultiDict()
    client_host: str | None = None
    prior_xff: list[str] = []
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection:
            continue
        norm = lower.replace("_", "-") if "_" in lower else lower
        if norm.startswith(_AUTH_PREFIX):
            continue
        if norm.startswith("x-forwarded-") or norm in _GATEWAY_OWNED:
            if lower == _XFF:
                prior_xff.append(value)
            continue
        if lower == "host":
            client_host = value
            if not pass_host:
                continue
        elif lower == "authorization":
            if identity is not None:
                continue
        elif lower == "cookie":
            stripped = strip_cookies(value, cookie_names)
            if stripped is None:
                continue
            value = stripped
        elif lower == "expect" or (lower == "content-length" and chunked):
            continue  # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length
        elif websocket and lower in _WS_HANDSHAKE:
            continue
        out.add(name, value)

    if peer:
        prior_xff.append(peer)
        out["X-Real-IP"] = peer
    if prior_xff:
        out["X-Forwarded-For"] = ", ".join(prior_xff)
    out["X-Forwarded-Proto"] = forwarded_proto
    if client_host:
        out["X-Forwarded-Host"] = client_host
    if identity is not None:
        out.update(identity_headers(identity))
    return out


def downstream_headers(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones; repeated headers (Set-Cookie) kept."""
    connection = _connection_tokens(headers)
    chunked = hdrs.TRANSFER_ENCODING in headers
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection or (chunked and lower == "content-length"):
            continue
        out.add(name, value)
    return out


def _has_dot_segment(path: str) -> bool:
    if "." not in path:
        return False
    # `..;x` counts: servlet containers drop path parameters before resolving dot segments.
    return any(segment.partition(";")[0] in (".", "..") for segment in path.split("/"))


def _close_code(code: int | None) -> int:
    """A close code that may be sent on: 1005 (no code) → 1000; 1006/1015/None → 1011."""
    if code is None or code in (1006, 1015) or not 1000 <= code <= 4999:
        return _SENDABLE_CLOSE_ABNORMAL
    return 1000 if code == 1005 else code


# --- the handler -----------------------------------------------------------------------------


class Forwarder:
    """The proxy handler: `await forwarder(request)` streams `request` to its upstream."""

    def __init__(self, routes: UpstreamTable, http: aiohttp.ClientSession, *,
                 cookie_names: frozenset[str], forwarded_proto: str, max_body_size: int = 0) -> None:
        self._routes = routes
        self._http = http
        self._cookie_names = frozenset(cookie_names)
        self._proto = forwarded_proto
        self._max_body = max_body_size  # 0: unlimited

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        route = self._routes.match(request.path)
        if route is None:
            raise web.HTTPNotFound()
        if _has_dot_segment(request.path):
            raise web.HTTPBadRequest(text="Bad Request: dot segments are not allowed in the path")
        websocket = request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        if websocket and not route.upstream.websockets:
            raise web.HTTPBadRequest(text="Bad Request: websockets are not enabled for this path")
        headers = upstream_headers(request.headers, request.get(IDENTITY), cookie_names=self._cookie_names,
                                   peer=request.remote, forwarded_proto=self._proto,
                                   pass_host=route.upstream.pass_host_header, websocket=websocket)
        url = route.url_for(request.rel_url.raw_path, request.rel_url.raw_query_string)
        if websocket:
            return await self._websocket(request, route, url, headers)
        body = self._body(request)
        try:
            upstream = await self._http.request(
                request.method, url, headers=headers, allow_redirects=False, timeout=route.timeout, data=body,
            )
        except (TimeoutError, aiohttp.ClientError) as exc:  # aiohttp's timeouts are TimeoutErrors
            if isinstance(body, _LimitedBody) and body.exceeded:
                raise PayloadTooLarge() from exc
            if isinstance(exc, TimeoutError):
                log.error("upstream timed out", extra={"upstream": route.upstream.path})
                raise UpstreamTimeout() from exc
            log.error("upstream unreachable: %s", type(exc).__name__, extra={"upstream": route.upstream.path})
            raise UpstreamError() from exc
        try:
            return await self._relay(request, upstream, route)
        finally:
            # After a complete body this returns the connection to the pool; otherwise the
            # connection is closed (aiohttp never reuses one with unread payload).
            upstream.release()

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

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse,
                     route: Route) -> web.StreamResponse:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason,
                                      headers=downstream_headers(upstream.headers))
        try:
            await response.prepare(request)
            if request.method == hdrs.METH_HEAD or upstream.status in _EMPTY_BODY_STATUSES:
                await response.write_eof()
                return response
            content = upstream.content
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
            raise web.HTTPBadRequest(text="Bad Request: invalid websocket handshake")
        try:
            # ws_connect has no connect/read split: bound the whole handshake by both.
            async with asyncio.timeout(route.upstream.connect_timeout + route.upstream.read_timeout):
                upstream = await self._http.ws_connect(url, headers=headers, protocols=offered,
                                                       autoclose=False, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            if 400 <= exc.status < 600:  # the upstream refused the upgrade: pass its verdict on
                return web.Response(status=exc.status)
            log.error("upstream websocket handshake failed", extra={"upstream": route.upstream.path})
            raise UpstreamError() from exc
        except TimeoutError as exc:
            log.error("upstream timed out", extra={"upstream": route.upstream.path})
            raise UpstreamTimeout() from exc
        except aiohttp.ClientError as exc:
            log.error("upstream unreachable: %s", type(exc).__name__, extra={"upstream": route.upstream.path})
            raise UpstreamError() from exc
        try:
            client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (),
                                           autoclose=False, autoping=True)
            await client.prepare(request)
            await _splice(client, upstream)
            return client
        finally:
            await upstream.close()


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


async def _pump(src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
                dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> aiohttp.WSMessage | None:
    """Relay data messages from `src` to `dst`; return the message that ended `src`."""
    while True:
        msg = await src.receive()
        try:
            if msg.type is WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            else:  # CLOSE, CLOSING, CLOSED, ERROR; pings are answered by autoping on each leg
                return msg
        except ConnectionError:
            return None  # dst is gone; its own pump reports how


async def _splice(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Pump both ways until one side closes, then close the other with the same code."""
    to_upstream = asyncio.create_task(_pump(client, upstream))
    to_client = asyncio.create_task(_pump(upstream, client))
    try:
        done, _ = await asyncio.wait((to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED)
        first, other = (to_client, client) if to_client in done else (to_upstream, upstream)
        ended = upstream if first is to_client else client
        msg = first.result()
        reason = msg.extra.encode() if msg is not None and msg.type is WSMsgType.CLOSE and msg.extra else b""
        code = _close_code(ended.close_code)
        # Closing `other` first also wakes the pump still blocked in other.receive().
        await other.close(code=code, message=reason)
        await ended.close(code=code, message=reason)
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
