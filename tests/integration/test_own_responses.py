"""The gateway's own answers: security headers everywhere, a sign-out that can only end the caller's own
session and only lands on this site. Header-size limits: test_server_protocol.py."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.conftest import free_port
from tests.support.op import browser_login

EXPECTED = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def assert_secure(resp: aiohttp.ClientResponse) -> None:
    for name, value in EXPECTED.items():
        assert resp.headers.get(name) == value, (resp.url, name)
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, resp.url


@pytest.mark.parametrize(("method", "path", "accept"), [
    ("GET", "/oauth2/signed_out", "text/html"),
    ("GET", "/oauth2/sign_out", "text/html"),
    ("POST", "/oauth2/sign_out", "text/html"),
    ("GET", "/oauth2/callback?state=nope&code=x", "text/html"),
    ("GET", "/oauth2/callback?state=nope&code=x", "application/json"),
    ("GET", "/oauth2/unknown", "text/html"),
    ("GET", "/oauth2/userinfo", "application/json"),
    ("GET", "/oauth2/auth", "application/json"),
    ("POST", "/healthz", "application/json"),  # 405 from aiohttp
    ("GET", "/healthz", "application/json"),
    ("GET", "/readyz", "application/json"),
    ("GET", "/app/x", "application/json"),  # 401 JSON on the proxy route
    ("GET", "/app/x", "text/html"),  # the redirect to the OP
])
async def test_every_own_answer_carries_the_security_headers(gateway_factory: Any, method: str, path: str,
                                                              accept: str) -> None:
    gw = await gateway_factory()
    resp = await gw.client.request(method, path, headers={"Accept": accept}, allow_redirects=False)
    if path == "/app/x" and accept == "text/html":
        assert resp.status == 302
        return  # a redirect to the OP on the proxy route: no body to frame or sniff
    assert_secure(resp)


async def test_proxied_responses_keep_the_upstreams_headers(gateway_factory: Any) -> None:
    gw = await gateway_factory(access={"public_paths": ["/pub"]})
    resp = await gw.client.get("/pub/x")
    assert resp.status == 200 and "Content-Security-Policy" not in resp.headers


async def test_replay_page_keeps_its_own_nonce_csp(gateway_factory: Any) -> None:
    gw = await gateway_factory(upstreams=[{"path": "/", "url": "http://127.0.0.1:9", "preserve_post": True}])
    async with gw.browser() as browser:
        result = await browser_login(browser, f"{gw.url}/oauth2/start?rd=/form")  # a session first
        assert result.url.path == "/form"
        browser.cookie_jar.clear(lambda c: not c.key.endswith("_login"))
        async with browser.post(f"{gw.url}/form", data={"a": "1"}, headers={"Accept": "text/html",
                                "Origin": gw.url}, allow_redirects=False) as resp:
            assert resp.status == 303
        result = await browser_login(browser, URL(resp.headers["Location"]))
        assert result.status == 200 and "<form" in result.body
        csp = result.headers["Content-Security-Policy"]
        assert "script-src 'nonce-" in csp and "frame-ancestors 'none'" in csp
        assert result.headers["X-Content-Type-Options"] == "nosniff"


# --- sign-out ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("rd", ["https://evil.example/x", "//evil.example", "/\\evil.example", "javascript:alert(1)",
                                "http:evil.example"])
async def test_sign_out_never_leaves_the_site(gateway_factory: Any, rd: str) -> None:
    gw = await gateway_factory(oidc={"issuer": f"http://127.0.0.1:{free_port()}"})  # no end_session_endpoint
    resp = await gw.client.get("/oauth2/sign_out", params={"rd": rd}, allow_redirects=False)
    location = resp.headers["Location"]
    assert resp.status == 302 and location.startswith("/") and not location.startswith(("//", "/\\"))


async def test_sign_out_ends_only_the_callers_session(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as alice, gw.browser() as other, \
            aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as attacker:
        assert (await browser_login(alice, f"{gw.url}/app")).status == 200
        assert (await browser_login(other, f"{gw.url}/app")).status == 200
        # A cross-site GET without cookies (or with the wrong ones) ends nothing.
        for headers in ({}, {"Cookie": f"{gw.settings.session.cookie_name}=forged"}):
            async with attacker.get(f"{gw.url}/oauth2/sign_out?rd=https://evil.example", headers=headers,
                                    allow_redirects=False) as resp:
                assert resp.status == 302
        for browser in (alice, other):
            async with browser.get(f"{gw.url}/app", allow_redirects=False) as resp:
                assert resp.status == 200
        # Alice signs out (the OP may confirm): only her session ends.
        async with alice.get(f"{gw.url}/oauth2/sign_out", allow_redirects=False) as resp:
            assert resp.status == 302
        async with alice.get(f"{gw.url}/app", allow_redirects=False) as resp:
            assert resp.status == 401  # no session any more (JSON: no Accept: text/html)
        async with other.get(f"{gw.url}/app", allow_redirects=False) as resp:
            assert resp.status == 200
