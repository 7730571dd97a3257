"""The gateway's own endpoints: /healthz, /readyz, /metrics, /oauth2/userinfo, /oauth2/auth.

/oauth2/userinfo and /oauth2/auth authenticate like a proxied request (Bearer JWT, then session
cookie) but never redirect: no identity is 401. /oauth2/auth is forward-auth for nginx auth_request /
Traefik forwardAuth: 202 with the identity headers the upstream would get, or 401.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.auth.identity import Identity
from gateway.auth.middleware import Authenticator, authenticate
from gateway.auth.policy import AccessPolicy
from gateway.errors import GatewayError, Unauthenticated
from gateway.oidc.metadata import ProviderState
from gateway.session.store import SessionStore
from gateway.web.observability import Metrics

__all__ = ["OpsHandlers"]


class OpsHandlers:
    def __init__(self, provider: ProviderState, store: SessionStore, metrics: Metrics,
                 authenticators: Sequence[Authenticator], policy: AccessPolicy,
                 identity_headers: Callable[[Identity], Mapping[str, str]]) -> None:
        self._provider = provider
        self._store = store
        self._metrics = metrics
        self._authenticators = authenticators
        self._policy = policy
        self._identity_headers = identity_headers

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        problems = {}
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
        identity = await self._identity(request)
        self._policy.check(identity)
        return web.Response(status=202, headers=dict(self._identity_headers(identity)))
