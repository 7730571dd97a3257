"""error_middleware: the only place that turns a failure into an HTTP answer.

A GatewayError becomes its fixed status with a small self-contained HTML page for browsers (Accept
contains text/html) or JSON `{"error", "error_description", "request_id"}` for everything else.
401s carry `WWW-Authenticate: Bearer` (RFC 6750 §3). Any other exception is logged once with its
type and becomes a generic 500: no stack trace, no foreign exception text, no token ever reaches the
client. Pages send `Cache-Control: no-store` and anti-framing / no-sniff headers.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import secrets

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.auth.middleware import wants_html
from gateway.errors import GatewayError, InvalidToken, Unauthenticated

__all__ = ["error_middleware", "render_error"]

log = logging.getLogger(__name__)

_TITLES = {
    400: "Sign-in failed",
    401: "Sign-in required",
    403: "Access denied",
    404: "Not found",
    500: "Something went wrong",
    502: "Service unavailable",
    503: "Temporarily unavailable",
    504: "Service timed out",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;margin:0;padding:2rem 1rem;background:#f6f7f9;color:#1f2328}}
main{{max-width:32rem;margin:auto;background:#fff;border-radius:8px;padding:1.5rem 2rem;box-shadow:0 1px 3px #0002}}
h1{{font-size:1.4rem;margin-top:0}}code{{font-size:.85rem;color:#57606a}}a{{color:#0969da}}</style>
</head><body><main><h1>{title}</h1><p>{detail}</p>
<p><a href="/">Go to the home page</a></p>
<p><code>Error: {code} · Request ID: {request_id}</code></p></main></body></html>
"""

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
}


def _request_id(request: web.Request) -> str:
    return request.headers.get("X-Request-Id", "")[:64] or secrets.token_hex(8)


def render_error(request: web.Request, exc: GatewayError) -> web.Response:
    request_id = html.escape(_request_id(request))
    headers = dict(_SECURITY_HEADERS)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer error="invalid_token"' if isinstance(exc, InvalidToken) else "Bearer"
    if wants_html(request):
        body = _PAGE.format(title=html.escape(_TITLES.get(exc.status, "Error")), detail=html.escape(exc.detail),
                            code=html.escape(exc.code), request_id=request_id)
        return web.Response(status=exc.status, text=body, content_type="text/html", headers=headers)
    payload = {"error": exc.code, "error_description": exc.detail, "request_id": request_id}
    return web.Response(status=exc.status, text=json.dumps(payload), content_type="application/json",
                        headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc.code)
        return render_error(request, exc)
    except (web.HTTPException, asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a stack trace to the client
        log.error("unhandled %s in %s %s", type(exc).__name__, request.method, request.path, exc_info=exc)
        return render_error(request, GatewayError())
