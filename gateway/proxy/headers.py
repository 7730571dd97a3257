"""Header hygiene at the trust boundary: what goes upstream, and what comes back.

Trusted: the verified Identity and the transport's peer address. Everything else the client sends is
input. Before forwarding:

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
* X-Request-Id is the gateway's: the id gateway.web.request_id chose for this request (the client's
  own when it was a sane token) replaces whatever the client sent.

Identity values (claims come from the OP) are sanitised: control characters (C0, DEL, C1; hence
CR/LF/NUL) are removed, non-ASCII is kept and sent as UTF-8, and a value longer than
MAX_HEADER_VALUE bytes is omitted rather than truncated (a truncated name could be someone else's);
groups are comma-joined, so a group whose name contains a comma is left out, and the list stops at
the last whole group that fits.

Header mapping (`headers`, IdentityHeaders): each `claims` entry sends one claim under a chosen name,
sanitised as above (a string as is, a boolean as `true`/`false`, a number in decimal, a list of
strings/numbers comma-joined like groups; an object or a missing claim sends nothing). Every mapped
name is also removed from client requests, always, exactly like X-Auth-Request-*. `id_token: true`
sends the session's raw ID token as X-Auth-Request-Id-Token; `access_token: false` stops the
`Authorization: Bearer` header (a client's own Authorization is still removed when an identity is
present).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth.identity import Identity
from gateway.config import HeaderSettings

__all__ = ["HOP_BY_HOP", "MAX_HEADER_VALUE", "IdentityHeaders", "REQUEST_ID", "downstream_headers", "identity_headers",
           "strip_cookies", "upstream_headers"]

log = logging.getLogger(__name__)

MAX_HEADER_VALUE = 8 * 1024  # bytes, UTF-8 encoded

# This request's id, set by gateway.web.request_id before anything else runs; sent as X-Request-Id.
REQUEST_ID = web.RequestKey("request_id", str)

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

# C0 controls, DEL and C1 controls: deleted from identity values (CR/LF would split the header).
_CONTROL_CHARS = dict.fromkeys([*range(0x20), *range(0x7F, 0xA0)])


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


def _claim_value(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return _clean(value)
    if isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        return _groups_value(str(v) for v in value)
    return None


class IdentityHeaders:
    """identity → the headers an upstream (or a forward-auth 202) gets, per the `headers` settings."""

    def __init__(self, settings: HeaderSettings | None = None, *, cache_size: int = 1024) -> None:
        self._settings = settings or HeaderSettings()
        self._claims = tuple(self._settings.claims.items())
        self.names = frozenset(name.lower() for name, _ in self._claims)  # stripped from client requests
        # The authenticators hand out the same (frozen) Identity object for a session or token they
        # remember: its headers are built once. Keyed by id(), the entry holds the object itself, so an
        # id is never reused while its entry lives; bounded, oldest first out.
        self._cache_size = cache_size
        self._built: dict[int, tuple[Identity, dict[str, str]]] = {}

    def __call__(self, identity: Identity) -> Mapping[str, str]:
        """The headers for `identity` (shared between requests: read, never modify)."""
        hit = self._built.get(id(identity))
        if hit is not None and hit[0] is identity:
            return hit[1]
        out, complete = self._build(identity)
        if complete:  # a header left out is logged each time, as before: such identities are not cached
            if len(self._built) >= self._cache_size:
                del self._built[next(iter(self._built))]
            self._built[id(identity)] = (identity, out)
        return out

    def _build(self, identity: Identity) -> tuple[dict[str, str], bool]:
        out, complete = _identity_headers(identity, self._settings.access_token)
        for name, claim in self._claims:
            if claim in identity.claims:
                value = _claim_value(identity.claims[claim])
                if value is None:
                    complete = False
                    log.warning("mapped header omitted: not a scalar/list, or too long", extra={"header": name})
                else:
                    out[name] = value
        if self._settings.id_token and identity.id_token:
            token = _clean(identity.id_token)
            if token is not None:
                out["X-Auth-Request-Id-Token"] = token
        return out, complete


def identity_headers(identity: Identity, *, access_token: bool = True) -> dict[str, str]:
    """The X-Auth-Request-* and Authorization headers that describe `identity` to an upstream."""
    return _identity_headers(identity, access_token)[0]


def _identity_headers(identity: Identity, access_token: bool) -> tuple[dict[str, str], bool]:
    """identity_headers(), and False when a header had to be left out (and was logged)."""
    out: dict[str, str] = {}
    complete = True
    for name, raw in (("X-Auth-Request-User", identity.sub), ("X-Auth-Request-Email", identity.email),
                      ("X-Auth-Request-Preferred-Username", identity.username)):
        if raw:
            value = _clean(raw)
            if value is None:
                complete = False
                log.warning("identity header omitted: empty or too long", extra={"header": name})
            else:
                out[name] = value
    if identity.groups:
        groups = _groups_value(identity.groups)
        if groups is not None:
            out["X-Auth-Request-Groups"] = groups
    if access_token and identity.access_token:
        bearer = _clean("Bearer " + identity.access_token)
        if bearer is None:
            complete = False
            log.warning("identity header omitted: empty or too long", extra={"header": "Authorization"})
        else:
            out["Authorization"] = bearer
    return out, complete


def strip_cookies(value: str, names: frozenset[str]) -> str | None:
    """A Cookie header value without the cookies in `names`; None when nothing is left.

    When nothing is removed the value is returned unchanged, byte for byte.
    """
    for name in names:  # a loop, not any(<generator>): once per proxied request with a Cookie header
        if name in value:
            break
    else:
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


_NO_TOKENS: frozenset[str] = frozenset()


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> frozenset[str]:
    values = headers.getall(hdrs.CONNECTION, ())
    if not values:
        return _NO_TOKENS
    if len(values) == 1 and values[0] in _PLAIN_CONNECTION:  # keep-alive / close: nothing else named
        return _PLAIN_CONNECTION[values[0]]
    return frozenset(token.strip().lower() for value in values for token in value.split(","))


_PLAIN_CONNECTION = {value: frozenset({value.lower()}) for value in ("keep-alive", "Keep-Alive", "close", "Close")}


# What upstream_headers does with a client header, by its name alone (before the per-request checks:
# Connection-named, mapped, and the conditions each kind names).
(_KEEP, _DROP, _FORWARDED_FOR, _HOST, _AUTHORIZATION, _COOKIE, _CONTENT_LENGTH, _WS,
 _REQUEST_ID_HEADER) = range(9)
_BY_NAME = {"host": _HOST, "authorization": _AUTHORIZATION, "cookie": _COOKIE, "expect": _DROP,
            "content-length": _CONTENT_LENGTH, **dict.fromkeys(_WS_HANDSHAKE, _WS)}
# name as sent -> (kind, lower-case, lower-case with `_` read as `-`): a pure function of the name,
# remembered for the names seen (bounded: client-chosen names beyond the bound are classified each time).
_NAMES: dict[str, tuple[int, str, str]] = {}
_NAMES_MAX = 2048


def _classify(name: str) -> tuple[int, str, str]:
    lower = name.lower()
    norm = lower.replace("_", "-") if "_" in lower else lower
    if lower in HOP_BY_HOP or norm.startswith(_AUTH_PREFIX):
        kind = _DROP
    elif norm.startswith("x-forwarded-") or norm in _GATEWAY_OWNED:
        kind = _FORWARDED_FOR if lower == _XFF else _DROP
    elif lower in _BY_NAME:
        kind = _BY_NAME[lower]
    elif norm == "x-request-id":
        kind = _REQUEST_ID_HEADER
    else:
        kind = _KEEP
    known = (kind, lower, norm)
    if len(_NAMES) < _NAMES_MAX:
        _NAMES[name] = known
    return known


def upstream_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str],
    identity: Identity | None,
    *,
    cookie_names: frozenset[str],
    peer: str | None,
    forwarded_proto: str,
    pass_host: bool = False,
    websocket: bool = False,
    request_id: str | None = None,
    mapping: IdentityHeaders | None = None,
) -> CIMultiDict[str]:
    """The headers to send upstream for a client request with `headers` (see the module docstring).

    `peer` is the client's address (appended to X-Forwarded-For); `pass_host` keeps the client's
    Host (otherwise the HTTP client sets the upstream's); `websocket` also drops the client's
    handshake headers, which the upstream handshake generates afresh; `request_id`, when given,
    replaces the client's X-Request-Id; `mapping` makes the identity headers (and names the mapped
    headers to strip from the client's).
    """
    mapped = mapping.names if mapping is not None else frozenset()
    connection = _connection_tokens(headers)
    chunked = hdrs.TRANSFER_ENCODING in headers
    out: CIMultiDict[str] = CIMultiDict()
    client_host: str | None = None
    prior_xff: list[str] = []
    for name, value in headers.items():
        known = _NAMES.get(name)
        kind, lower, norm = known if known is not None else _classify(name)
        if kind == _DROP or lower in connection or norm in mapped:
            continue
        if kind == _KEEP:
            out.add(name, value)
            continue
        if kind == _FORWARDED_FOR:
            prior_xff.append(value)
            continue
        if kind == _HOST:
            client_host = value
            if not pass_host:
                continue
        elif kind == _AUTHORIZATION:
            if identity is not None:
                continue
        elif kind == _COOKIE:
            stripped = strip_cookies(value, cookie_names)
            if stripped is None:
                continue
            value = stripped
        elif kind == _CONTENT_LENGTH:
            if chunked:
                continue  # RFC 9112 §6.3: Transfer-Encoding overrides Content-Length
        elif kind == _WS:
            if websocket:
                continue
        elif kind == _REQUEST_ID_HEADER and request_id is not None:  # also X_Request_Id (CGI reads it alike)
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
    if request_id is not None:
        out["X-Request-Id"] = request_id
    if identity is not None:
        out.update(mapping(identity) if mapping is not None else identity_headers(identity))
    return out


def downstream_headers(headers: CIMultiDictProxy[str] | CIMultiDict[str], *,
                       into: CIMultiDict[str] | None = None) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones; repeated headers (Set-Cookie) kept.

    Added to `into` when given (a response's own headers: no copy), else to a new multidict."""
    out: CIMultiDict[str] = CIMultiDict() if into is None else into
    out.extend(headers)  # then take out what may not pass: order and repeated headers stay as sent
    for name in HOP_BY_HOP | _connection_tokens(headers):
        out.popall(name, None)
    if hdrs.TRANSFER_ENCODING in headers:
        out.popall(hdrs.CONTENT_LENGTH, None)
    return out
