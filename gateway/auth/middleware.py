"""auth_middleware: every proxied request is authenticated and authorised before it is forwarded.

Applies to the proxy route only (the gateway's own endpoints authenticate themselves). Public paths
pass without identity. Otherwise the authenticators are asked in order; the first Identity wins, and a
present-but-bad credential raises (401). With no credential, a browser navigation (GET/HEAD accepting
text/html) is sent to the OP to log in, returning to this very path afterwards; so is a same-origin
form POST to an upstream with `preserve_post` (gateway.auth.preserve), whose fields are replayed
after the login. Anything else gets 401 + `WWW-Authenticate: Bearer` (a fetch/XHR never gets an
HTML redirect). The policy then allows or raises Forbidden (403).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.auth.identity import IDENTITY, Identity
from gateway.auth.policy import AccessPolicy
from gateway.auth.preserve import Form, PostPreserver
from gateway.errors import Unauthenticated

__all__ = ["PROXY_ROUTE", "AuthGate", "Authenticator", "StartLogin", "auth_middleware", "authenticate",
           "is_browser_navigation", "wants_html"]

PROXY_ROUTE = "proxy"


class Authenticator(Protocol):
    async def authenticate(self, request: web.Request) -> Identity | None: ...


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def is_browser_navigation(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and wants_html(request)


async def authenticate(request: web.Request, authenticators: Sequence[Authenticator]) -> Identity | None:
    for authenticator in authenticators:
        identity = await authenticator.authenticate(request)
        if identity is not None:
            return identity
    return None


class StartLogin(Protocol):
    """LoginFlow.begin: send the browser to the OP, back to `rd` (re-POSTing `form`, when given) after."""

    def __call__(self, request: web.Request, rd: str, form: Form | None = None, /) -> Awaitable[web.StreamResponse]:
        ...


class AuthGate:
    """The check itself: `await gate.authorize(request)` is None when the request may go on (with
    request[IDENTITY] set, unless the path is public), else the answer to send instead (a login
    redirect); it raises Unauthenticated / Forbidden. Also usable as an aiohttp middleware."""

    __middleware_version__ = 1  # aiohttp's new-style middleware marker (what @web.middleware sets)

    def __init__(self, authenticators: Sequence[Authenticator], policy: AccessPolicy, start_login: StartLogin,
                 preserver: PostPreserver | None = None) -> None:
        self._authenticators = tuple(authenticators)
        self._policy = policy
        self._start_login = start_login
        self._preserver = preserver

    async def authorize(self, request: web.Request) -> web.StreamResponse | None:
        policy = self._policy
        if policy.is_public(request.path, request.method):
            return None
        identity = None
        for authenticator in self._authenticators:
            identity = await authenticator.authenticate(request)
            if identity is not None:
                break
        if identity is None:
            if is_browser_navigation(request):
                return await self._start_login(request, request.raw_path)
            form = await self._preserver.capture(request) if self._preserver is not None else None
            if form is not None:
                return await self._start_login(request, request.raw_path, form)
            raise Unauthenticated()
        policy.check(identity, request.method, request.path)
        request[IDENTITY] = identity
        return None

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.route.name == PROXY_ROUTE:
            answer = await self.authorize(request)
            if answer is not None:
                return answer
        return await handler(request)


def auth_middleware(authenticators: Sequence[Authenticator], policy: AccessPolicy, start_login: StartLogin,
                    preserver: PostPreserver | None = None) -> AuthGate:
    """The AuthGate for the proxy route, as a middleware (other routes pass straight through)."""
    return AuthGate(authenticators, policy, start_login, preserver)
