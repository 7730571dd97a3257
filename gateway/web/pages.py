"""Pages: the gateway's own HTML (error pages, the signed-out page, the POST replay page).

Templates live in one place, gateway/web/templates/ (package data): error.html, signed_out.html and
replay_post.html. A configured `pages_dir` overrides any of them; a file missing there falls back to
the built-in one. They are read once, at start-up. Substitution is string.Template's `$name`: every
value is HTML-escaped (quotes too), except the replay page's `$fields`, which is built here from
escaped parts; an unknown `$name` stays as written. Texts are fixed per error code and language
(gateway.web.messages): a page never shows exception text, and the language follows Accept-Language.

Pages are self-contained (inline CSS, no external assets). CSP `default-src 'none'` allows nothing
else; the replay page's one inline script runs by a fresh per-response nonce (CSP3 §6.7.2.3), and
its button works without script. Every page is `no-store` (the replay page carries form data), may
not be framed, and names the request id. Button targets are same-origin paths (safe_return_path).
"""

from __future__ import annotations

import html
import logging
import secrets
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from string import Template
from urllib.parse import urlencode

from aiohttp import web

from gateway.auth.flow import SIGN_OUT_PATH, START_PATH
from gateway.auth.redirect import safe_return_path
from gateway.errors import GatewayError
from gateway.web.messages import HTML_LANG, LABELS, Action, Lang, error_text, negotiate, page_text
from gateway.web.request_id import HEADER, request_id_of

__all__ = ["SECURITY_HEADERS", "TEMPLATES", "Pages"]

log = logging.getLogger(__name__)

TEMPLATES = ("error.html", "signed_out.html", "replay_post.html")

SECURITY_HEADERS: Mapping[str, str] = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
                               "frame-ancestors 'none'",
}


def _read_template(name: str, override_dir: Path | None) -> str:
    if override_dir is not None and (override_dir / name).is_file():
        return (override_dir / name).read_text(encoding="utf-8")
    return resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8")


def _attr(value: str) -> str:
    """An attribute value that survives HTML parsing exactly (CR and LF as character references)."""
    return html.escape(value, quote=True).replace("\r", "&#13;").replace("\n", "&#10;")


def _here(request: web.Request) -> str:
    """This page's own path for a retry: only for a navigation outside /oauth2/, else /."""
    if request.method in ("GET", "HEAD") and not request.path.startswith("/oauth2/"):
        return safe_return_path(request.raw_path)
    return "/"


def _action_url(action: Action, request: web.Request) -> str:
    if action is Action.SIGN_IN:
        return f"{START_PATH}?{urlencode({'rd': _here(request)})}"
    if action is Action.RESTART:
        return f"{START_PATH}?{urlencode({'rd': '/'})}"
    if action is Action.SIGN_OUT:
        return SIGN_OUT_PATH
    if action is Action.RETRY:
        return _here(request)
    return "/"


class Pages:
    def __init__(self, override_dir: Path | None = None) -> None:
        if override_dir is not None:
            unknown = sorted(p.name for p in override_dir.glob("*.html") if p.name not in TEMPLATES)
            if unknown:
                log.warning("pages_dir: ignoring %s (templates are %s)", ", ".join(unknown), ", ".join(TEMPLATES))
        self._templates = {name: Template(_read_template(name, override_dir)) for name in TEMPLATES}

    def _render(self, name: str, request: web.Request, lang: Lang, values: Mapping[str, str], *,
                status: int = 200, raw: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None) -> web.Response:
        request_id = request_id_of(request)
        escaped = {key: html.escape(value, quote=True) for key, value in
                   {**LABELS[lang], "lang": HTML_LANG[lang], "request_id": request_id, **values}.items()}
        body = self._templates[name].safe_substitute({**escaped, **(raw or {})})
        response_headers = {**SECURITY_HEADERS, "Content-Language": HTML_LANG[lang],
                            "Vary": "Accept, Accept-Language", HEADER: request_id, **(headers or {})}
        return web.Response(status=status, text=body, content_type="text/html", charset="utf-8",
                            headers=response_headers)

    def error(self, request: web.Request, exc: GatewayError) -> web.Response:
        """The error page for `exc`: its status, and the fixed text of its code in the reader's language."""
        lang = negotiate(request.headers.get("Accept-Language"))
        action, text = error_text(exc.code, lang)
        values = {"title": text.title, "message": text.message, "action_text": text.action,
                  "action_url": _action_url(action, request), "code": exc.code, "status": str(exc.status),
                  "status_text": LABELS[lang]["status_text"].format(status=exc.status)}
        return self._render("error.html", request, lang, values, status=exc.status)

    async def signed_out(self, request: web.Request) -> web.Response:
        """GET /oauth2/signed_out: where sign-out lands; it never redirects, so it can't loop into a login."""
        lang = negotiate(request.headers.get("Accept-Language"))
        text = page_text("signed_out", lang)
        values = {"title": text.title, "message": text.message, "action_text": text.action,
                  "action_url": f"{START_PATH}?{urlencode({'rd': '/'})}"}
        return self._render("signed_out.html", request, lang, values)

    def replay_post(self, request: web.Request, action: str, fields: Sequence[tuple[str, str]]) -> web.Response:
        """A page that POSTs `fields` to the same-origin path `action` (the form that arrived before login)."""
        lang = negotiate(request.headers.get("Accept-Language"))
        text = page_text("replay_post", lang)
        nonce = secrets.token_urlsafe(18)
        inputs = "\n".join(f'<input type="hidden" name="{_attr(name)}" value="{_attr(value)}">'
                           for name, value in fields)
        values = {"title": text.title, "message": text.message, "action_text": text.action,
                  "action_url": safe_return_path(action), "nonce": nonce}
        headers = {
            "Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'; "
                                       "style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
            # The replayed POST must carry Origin (a no-referrer page would send `Origin: null` and fail
            # an upstream's CSRF check), but never this URL: it holds the spent code and state.
            "Referrer-Policy": "strict-origin",
        }
        return self._render("replay_post.html", request, lang, values, raw={"fields": inputs}, headers=headers)
