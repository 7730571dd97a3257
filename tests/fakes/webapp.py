"""A small HTML application: the upstream of the browser tests (what a person sees after signing in).

* GET, Accept with text/html: a page that shows what the request looked like to the upstream (path,
  query, the identity headers, X-Request-Id; never the access token, only whether one came), and a
  form (`title` input, `note` textarea) that POSTs to /app/notes?via=form;
* POST: a "Saved" page listing the fields it received (and the raw body, for exact comparison);
* anything else (fetch/XHR): JSON {path, query_string, user}.

Values a test reads have ids (`#path`, `#query`, `#user`, ...). Everything shown is HTML-escaped.
"""

from __future__ import annotations

import html

from aiohttp import web

__all__ = ["webapp"]

_STYLE = """body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#1f2328;background:#fff}
header{background:#24292f;color:#fff;padding:.75rem 1rem;font-weight:600}main{padding:1rem}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem .75rem}dt{color:#57606a}
dd{margin:0;overflow-wrap:anywhere;font-family:ui-monospace,monospace;font-size:.9rem}
label{display:block;margin:.75rem 0 .25rem}input,textarea{width:100%;box-sizing:border-box;font:inherit}
button{margin-top:.75rem;padding:.5rem 1rem;font:inherit}pre{white-space:pre-wrap;overflow-wrap:anywhere}"""


def _page(title: str, body: str) -> web.Response:
    return web.Response(content_type="text/html", text=f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style>{_STYLE}</style></head>
<body><header>Example app</header><main><h1>{html.escape(title)}</h1>{body}</main></body></html>""")


def _row(ident: str, label: str, value: str | None) -> str:
    return f'<dt>{label}</dt><dd id="{ident}">{html.escape(value or "")}</dd>'


def _whoami(request: web.Request) -> str:
    headers = request.headers
    bearer = headers.get("Authorization", "").startswith("Bearer ")
    return "<dl>" + "".join([
        _row("path", "Path", request.path),
        _row("query", "Query", request.rel_url.raw_query_string),
        _row("user", "User", headers.get("X-Auth-Request-User")),
        _row("email", "Email", headers.get("X-Auth-Request-Email")),
        _row("groups", "Groups", headers.get("X-Auth-Request-Groups")),
        _row("token", "Access token", "present" if bearer else "none"),
        _row("request-id", "Request ID", headers.get("X-Request-Id")),
    ]) + "</dl>"


_FORM = """<form method="post" action="/app/notes?via=form">
<label for="title">Title</label><input id="title" name="title">
<label for="note">Note</label><textarea id="note" name="note" rows="3"></textarea>
<button type="submit">Save</button></form>"""


async def _handle(request: web.Request) -> web.Response:
    if request.method == "POST":
        body = await request.read()
        fields = await request.post()
        rows = "".join(f"<li><b>{html.escape(name)}</b>: {html.escape(str(value))}</li>"
                       for name, value in fields.items())
        return _page("Saved", f'{_whoami(request)}<ul id="fields">{rows}</ul>'
                              f'<p>Raw body:</p><pre id="body">{html.escape(body.decode("utf-8", "replace"))}</pre>')
    if "text/html" in request.headers.get("Accept", ""):
        return _page("Reports", _whoami(request) + _FORM)
    return web.json_response({"path": request.path, "query_string": request.rel_url.raw_query_string,
                              "user": request.headers.get("X-Auth-Request-User")})


def webapp() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app
