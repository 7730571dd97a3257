"""The login baseline: the least a Relying Party does for the gateway's login flow, with no checks.

    python benchmarks/bare_rp.py LISTEN_PORT ISSUER CLIENT_ID CLIENT_SECRET UPSTREAM_URL

A browser without a session is sent to the OP's authorization endpoint (state in memory); the
callback redeems the code (client_secret_basic), asks userinfo, keeps the claims in memory under a
random cookie and redirects to `/`, which is fetched from the upstream. No ID-token verification, no
PKCE, no nonce check, no Redis, no logging: what the browser's three extra requests and the two OP
calls cost on this machine, so that the cold-login figure can be read against a floor measured in the
same run. Never a thing to deploy.
"""

from __future__ import annotations

import base64
import secrets
import sys

import aiohttp
import uvloop
from aiohttp import web
from yarl import URL

SCOPE = "openid profile email offline_access"


def make_app(port: int, issuer: str, client_id: str, client_secret: str, upstream: str) -> web.Application:
    http_key = web.AppKey("http", aiohttp.ClientSession)
    redirect_uri = f"http://127.0.0.1:{port}/oauth2/callback"
    basic = "Basic " + base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    pending: set[str] = set()
    sessions: dict[str, object] = {}

    async def http_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[http_key] = aiohttp.ClientSession(auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())
        yield
        await app[http_key].close()

    async def callback(request: web.Request) -> web.StreamResponse:
        pending.discard(request.query.get("state", ""))
        http = request.app[http_key]
        async with http.post(f"{issuer}/token", headers={"Authorization": basic}, data={
                "grant_type": "authorization_code", "code": request.query.get("code", ""),
                "redirect_uri": redirect_uri}) as answer:
            tokens = await answer.json()
        async with http.get(f"{issuer}/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}) as answer:
            claims = await answer.json()
        sid = secrets.token_urlsafe(32)
        sessions[sid] = claims
        response = web.HTTPFound("/")
        response.set_cookie("bare_rp", sid, httponly=True)
        return response

    async def page(request: web.Request) -> web.StreamResponse:
        if request.cookies.get("bare_rp") not in sessions:
            state = secrets.token_urlsafe(32)
            pending.add(state)
            raise web.HTTPFound(URL(f"{issuer}/auth").with_query(
                response_type="code", client_id=client_id, redirect_uri=redirect_uri, scope=SCOPE,
                prompt="consent", state=state, nonce=secrets.token_urlsafe(32)))
        async with request.app[http_key].get(upstream + request.rel_url.raw_path_qs) as answer:
            return web.Response(status=answer.status, body=await answer.read())

    app = web.Application()
    app.cleanup_ctx.append(http_ctx)
    app.router.add_get("/oauth2/callback", callback)
    app.router.add_get("/{tail:.*}", page)
    return app


if __name__ == "__main__":
    port, issuer, client_id, client_secret, upstream = sys.argv[1:6]
    web.run_app(make_app(int(port), issuer, client_id, client_secret, upstream.rstrip("/")), host="127.0.0.1",
                port=int(port), loop=uvloop.new_event_loop(), print=None, access_log=None)
