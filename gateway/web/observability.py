"""Metrics (a per-app prometheus CollectorRegistry) and the redacting access logger.

The access log records method, path without the query string (codes, states and tokens travel in
queries), status, size and duration: never headers, cookies or bodies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["AccessLogger", "Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("oidc_gateway_http_requests_total", "HTTP requests by route kind and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("oidc_gateway_http_request_duration_seconds", "Time to response headers",
                                 ["route"], registry=self.registry)
        self.logins = Counter("oidc_gateway_logins_total", "Completed login callbacks by outcome",
                              ["outcome"], registry=self.registry)
        self.refreshes = Counter("oidc_gateway_token_refreshes_total", "Refresh grants by outcome",
                                 ["outcome"], registry=self.registry)

    def record_refresh(self, outcome: str) -> None:
        self.refreshes.labels(outcome=outcome).inc()

    def record_login(self, outcome: str, reason: str) -> None:
        self.logins.labels(outcome=outcome).inc()

    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        @web.middleware
        async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            route = request.match_info.route.name or "other"
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                self.requests.labels(route=route, status=str(status)).inc()
                self.latency.labels(route=route).observe(time.perf_counter() - started)

        return metrics_middleware


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, duration: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %d %.1fms',
            request.remote, request.method, request.path, response.status, response.body_length,
            duration * 1000,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
