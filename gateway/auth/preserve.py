"""PostPreserver: a form POST that arrives without a session survives the login (OIDCPreservePost).

Opt-in per upstream (`upstreams[].preserve_post`). Captured, and then replayed after the login by a
self-submitting page to the same path, is only a POST that a person's own form submission on this
site would make:

* `Content-Type: application/x-www-form-urlencoded`, UTF-8 (no charset parameter, or utf-8), no
  Content-Encoding, a Content-Length of at most `preserve_post_max_size` (multipart, other charsets,
  chunked and larger bodies are left alone: they get the usual 401 and the browser's Back button
  still has the form);
* `Accept` names text/html, and `Sec-Fetch-Mode`, when sent, is `navigate` (a fetch()/XHR gets 401);
* same-origin only: `Origin` must be the gateway's public origin and `Sec-Fetch-Site`, when sent,
  `same-origin`. Without this rule a cross-site form (which SameSite=Lax keeps away from the session)
  would be replayed from the gateway's own origin right after the victim logs in: login CSRF into a
  state-changing POST. A browser that sends no Origin on a POST gets the usual 401.

The body must parse as a form (at most MAX_FIELDS fields, strict UTF-8 after percent-decoding).
Field values are user input: they are stored with the pending login (single-use, login_timeout TTL)
and never logged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from urllib.parse import parse_qsl, urlsplit

from aiohttp import hdrs, web

__all__ = ["MAX_FIELDS", "Form", "PostPreserver"]

Form = tuple[tuple[str, str], ...]

MAX_FIELDS = 1000
_FORM_TYPE = "application/x-www-form-urlencoded"
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    return scheme, host, port or _DEFAULT_PORTS[scheme]


class PostPreserver:
    def __init__(self, *, public_url: str, limit_for: Callable[[str], int]) -> None:
        """`limit_for(path)`: the preserve_post_max_size of the path's upstream, 0 when it doesn't opt in."""
        self._origin = _origin(public_url)
        self._limit_for = limit_for

    def _eligible(self, request: web.Request) -> bool:
        headers = request.headers
        if request.method != hdrs.METH_POST or "text/html" not in headers.get(hdrs.ACCEPT, ""):
            return False
        if headers.get("Sec-Fetch-Mode", "navigate") != "navigate":
            return False
        if headers.get("Sec-Fetch-Site", "same-origin") != "same-origin":
            return False
        origin = headers.get(hdrs.ORIGIN)
        if origin is None or self._origin is None or _origin(origin) != self._origin:
            return False
        if request.content_type != _FORM_TYPE or (request.charset or "utf-8").lower() != "utf-8":
            return False
        return headers.get(hdrs.CONTENT_ENCODING, "identity").lower() == "identity"

    async def capture(self, request: web.Request) -> Form | None:
        """The request's form fields when it is a POST to preserve (see the module docstring), else None.

        Reads the body only when it will be preserved; otherwise nothing of it is consumed.
        """
        limit = self._limit_for(request.path)
        length = request.content_length
        if not limit or length is None or length > limit or not self._eligible(request):
            return None
        try:
            body = await request.content.readexactly(length)
        except asyncio.IncompleteReadError:
            return None  # the client gave up mid-body
        try:
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict",
                              max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):  # not a form a browser would send, or too many fields
            return None
        return tuple(pairs)
