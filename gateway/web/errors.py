"""gateway_middleware: the one middleware layer (request id, metrics, the proxy route's AuthGate) and the
only place that turns a failure into an HTTP answer.

A GatewayError becomes its fixed status with a small self-contained HTML page for browsers (Accept
contains text/html; gateway.web.pages, in the reader's language) or JSON `{"error",
"error_description", "request_id"}` for everything else (and always for errors whose class says
`html = False`: answers to servers, not people). 401s carry `WWW-Authenticate: Bearer` (RFC 6750
§3). Any other exception is logged once with its type and becomes a generic 500: no stack trace, no
foreign exception text, no token ever reaches the client. Every answer names the request id (body
and X-Request-Id header), sends `Cache-Control: no-store` and anti-framing / no-sniff headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from time import perf_counter

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.auth.middleware import PROXY_ROUTE, AuthGate, wants_html
from gateway.errors import GatewayError, InvalidToken, NotFound, Unauthenticated
from gateway.proxy.headers import REQUEST_ID
from gateway.web.logs import bind_request
from gateway.web.observability import Metrics
from gateway.web.pages import SECURITY_HEADERS, Pages
from gateway.web.request_id import HEADER, RequestIds, request_id_of, sane_request_id

__all__ = ["gateway_middleware", "render_error", "render_failure"]

log = logging.getLogger(__name__)


def render_error(request: web.Request, exc: GatewayError, pages: Pages) -> web.Response:
    if exc.html and wants_html(request):
        response = pages.error(request, exc)
    else:
        request_id = request_id_of(request)
        payload = {"error": exc.code, "error_description": exc.detail, "request_id": request_id}
        response = web.Response(status=exc.status, text=json.dumps(payload), content_type="application/json",
                                headers={**SECURITY_HEADERS, HEADER: request_id})
    if isinstance(exc, Unauthenticated):
        response.headers["WWW-Authenticate"] = ('Bearer error="invalid_token"' if isinstance(exc, InvalidToken)
                                                else "Bearer")
    return response


def render_failure(request: web.Request, exc: BaseException, pages: Pages) -> web.Response:
    """The answer for an exception a handler raised (not an HTTPException): logged once when it is ours
    (5xx) or foreign, then rendered; a foreign one as a generic 500."""
    if isinstance(exc, GatewayError):
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc.code,
                      extra={"request_id": request_id_of(request)})
        return render_error(request, exc, pages)
    log.error("unhandled %s in %s %s", type(exc).__name__, request.method, request.path, exc_info=exc,
              extra={"request_id": request_id_of(request)})
    return render_error(request, GatewayError(), pages)


def gateway_middleware(pages: Pages, metrics: Metrics, gate_of: Callable[[web.Request], AuthGate]) -> Middleware:
    """The request id, failure rendering, request metrics and the proxy route's AuthGate (`gate_of(request)`:
    the one in force, reloads replace it) in one layer, in that order from the outside in (one coroutine
    frame per request instead of four)."""
    in_flight, done = metrics.request_started, metrics.request_done
    new_id = RequestIds()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[REQUEST_ID] = sane_request_id(request.headers.getall(HEADER, ())) or new_id()
        bind_request(request)  # log records from here on carry this request's id
        started = perf_counter()
        route = request.match_info.route.name or "other"
        status = 500
        in_flight()
        try:
            try:
                answer = await gate_of(request).authorize(request) if route == PROXY_ROUTE else None
                response = await handler(request) if answer is None else answer
                status = response.status
                return response
            except (web.HTTPException, GatewayError) as exc:
                status = exc.status
                raise
            finally:
                done(route, status, started)
        except GatewayError as exc:
            return render_failure(request, exc, pages)
        except web.HTTPNotFound:  # the router's: a request target that is not a path (CONNECT, OPTIONS *)
            return render_failure(request, NotFound(), pages)
        except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a stack trace to the client
            return render_failure(request, exc, pages)

    return middleware
