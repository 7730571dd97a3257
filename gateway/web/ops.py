"""The gateway's own endpoints: /healthz, /readyz, /metrics, /oauth2/userinfo, /oauth2/auth.

/oauth2/userinfo and /oauth2/auth authenticate like a proxied request (Bearer JWT, then session
cookie) but never redirect: no identity is 401. /oauth2/auth is forward-auth for nginx auth_request /
Traefik forwardAuth / Envoy ext_authz (HTTP service): 202 with the identity headers the upstream would
get, 401 without an identity, 403 when the access policy says no.

Forward-auth decides for the *original* request, which the proxy describes in headers: the method
from X-Forwarded-Method (Traefik) or X-Original-Method (nginx), else GET; the URI from
X-Forwarded-Uri (Traefik), X-Original-URL or X-Original-URI (nginx; absolute or path). Envoy's HTTP
ext_authz instead appends the original path to /oauth2/auth and keeps the method, so without those
headers the method is this request's and the URI is what follows /oauth2/auth (`/` when nothing).
These headers are trusted only to choose which rule to apply to the caller's *own* credential: a
client that reaches /oauth2/auth directly learns nothing it could not learn by asking for that
path, and is never proxied anywhere. A public original path answers 202 with no identity headers.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web
from multidict import CIMultiDict
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from gateway.auth.assertion import IdentityAssertion
from gateway.auth.identity import Identity
from gateway.auth.middleware import Authenticator, authenticate
from gateway.auth.policy import AccessPolicy
from gateway.errors import BadRequest, GatewayError, ProviderUnavailable, Unauthenticated
from gateway.oidc.metadata import ProviderState
from gateway.session.store import SessionStore
from gateway.web.observability import Metrics

__all__ = ["OpsHandlers"]


class OpsHandlers:
    def __init__(self, provider: ProviderState, store: SessionStore, metrics: Metrics,
                 authenticators: Sequence[Authenticator], policy: AccessPolicy,
                 identity_headers: Callable[[Identity], Mapping[str, str]],
                 assertion: IdentityAssertion | None = None) -> None:
        self._provider = provider
        self._store = store
        self._metrics = metrics
        self._authenticators = authenticators
        self._policy = policy
        self._identity_headers = identity_headers
        self._assertion = assertion  # the signed identity header, when identity_assertion is enabled

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = {}
        if self._provider.metadata is None:  # try now (at most once a second), not at the retry's backoff
            with contextlib.suppress(ProviderUnavailable):
                await self._provider.ensure_reachable()
        if self._provider.metadata is None:
            problems["provider"] = self._provider.last_error or "not loaded"
        try:
            await self._store.ping()
        except GatewayError:
            problems["session_store"] = "unreachable"
        if problems:
            return web.json_response({"status": "unready", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _identity(self, request: web.Request) -> Identity:
        identity = await authenticate(request, self._authenticators)
        if identity is None:
            raise Unauthenticated()
        return identity

    async def userinfo(self, request: web.Request) -> web.Response:
        identity = await self._identity(request)
        body = {**{k: v for k, v in identity.claims.items() if k != "iss"}, "sub": identity.sub}
        return web.Response(text=json.dumps(body), content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def forward_auth(self, request: web.Request) -> web.Response:
        method, path = original_request(request)
        if self._policy.is_public(path, method):
            return web.Response(status=202, headers={"Cache-Control": "no-store"})
        identity = await self._identity(request)
        self._policy.check(identity, method, path)
        headers = CIMultiDict(self._identity_headers(identity))
        if self._assertion is not None:  # what the proxy passes on must match what proxying would send
            self._assertion.apply(headers, identity)
        headers["Cache-Control"] = "no-store"
        return web.Response(status=202, headers=headers)


_AUTH_PATH = "/oauth2/auth"
_METHOD_HEADERS = ("X-Forwarded-Method", "X-Original-Method")
_URI_HEADERS = ("X-Forwarded-Uri", "X-Original-URL", "X-Original-URI")


def original_request(request: web.Request) -> tuple[str, str]:
    """(method, decoded path) of the request the proxy asks about (see the module docstring)."""
    method = next((request.headers[h] for h in _METHOD_HEADERS if request.headers.get(h)), request.method).upper()
    envoy = request.raw_path.removeprefix(_AUTH_PATH) if request.path.startswith(_AUTH_PATH + "/") else "/"
    uri = next((request.headers[h] for h in _URI_HEADERS if request.headers.get(h)), envoy)
    if any(not 0x21 <= ord(c) <= 0x7E for c in uri):
        raise BadRequest("The original URI is not valid.")
    try:
        path = URL(uri, encoded=True).path
    except ValueError:
        raise BadRequest("The original URI is not valid.") from None
    if not path.startswith("/"):
        raise BadRequest("The original URI is not valid.")
    return method, path
