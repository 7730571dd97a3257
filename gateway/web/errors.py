"""error_middleware: the only place that turns a failure into an HTTP answer.

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

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.auth.middleware import wants_html
from gateway.errors import GatewayError, InvalidToken, Unauthenticated
from gateway.web.pages import SECURITY_HEADERS, Pages
from gateway.web.request_id import HEADER, request_id_of

__all__ = ["error_middleware", "render_error"]

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


def error_middleware(pages: Pages) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except GatewayError as exc:
            if exc.status >= 500:
                log.error("%s %s failed: %s", request.method, request.path, exc.code,
                          extra={"request_id": request_id_of(request)})
            return render_error(request, exc, pages)
        except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: never a stack trace to the client
            log.error("unhandled %s in %s %s", type(exc).__name__, request.method, request.path, exc_info=exc,
                      extra={"request_id": request_id_of(request)})
            return render_error(request, GatewayError(), pages)

    return middleware
