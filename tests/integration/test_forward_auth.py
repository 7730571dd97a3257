"""GET /oauth2/auth (forward-auth): the original method/URI headers of Traefik, nginx and Envoy drive rules."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.support.op import browser_login

RULES = [
    {"path": "^/admin/", "allowed_groups": ["nobody-has-this"]},
    {"path": "^/api/", "methods": ["DELETE"], "allowed_groups": ["nobody-has-this"]},
    {"path": "^/open/", "public": True},
]
HEADERS = {"claims": {"X-User-Name": "name"}, "id_token": True}


async def signed_in(gw: Any) -> aiohttp.ClientSession:
    browser = gw.browser()
    result = await browser_login(browser, f"{gw.url}/")
    assert result.status == 200, result.body
    return browser


@pytest.fixture
async def gateway(gateway_factory: Any) -> Any:
    return await gateway_factory(access={"rules": RULES, "redirect_domains": [".example.com"]}, headers=HEADERS)


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 202),
    ({"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/admin/x"}, 403),  # Traefik
    ({"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/app/x?y=/admin/"}, 202),
    ({"X-Original-URL": "https://app.example.com/admin/x?q=1"}, 403),  # nginx, absolute
    ({"X-Original-URI": "/admin/x"}, 403),  # nginx, $request_uri
    ({"X-Original-URL": "/open/../admin/x"}, 403),  # dot segments resolved for rules
    ({"X-Original-URL": "/%61dmin/x"}, 403),  # percent-decoded
    ({"X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/api/x"}, 403),
    ({"X-Original-Method": "delete", "X-Original-URL": "/api/x"}, 403),
    ({"X-Forwarded-Method": "GET", "X-Forwarded-Uri": "/api/x"}, 202),
])
async def test_rules_apply_to_the_original_request(gateway: Any, headers: dict[str, str], status: int) -> None:
    async with await signed_in(gateway) as browser:
        resp = await browser.get(f"{gateway.url}/oauth2/auth", headers={"Accept": "application/json", **headers})
        assert resp.status == status, await resp.text()
        if status == 202:
            assert resp.headers["X-Auth-Request-User"] == "alice"
            assert resp.headers["X-Auth-Request-Groups"] == "admins,staff"
            assert resp.headers["Authorization"].startswith("Bearer ")
            assert resp.headers["X-User-Name"]  # mapped claim
            assert resp.headers["X-Auth-Request-Id-Token"].count(".") == 2  # opt-in ID token header
        else:
            assert (await resp.json())["error"] == "access_denied"


async def test_without_identity_401_and_public_202_without_identity(gateway: Any) -> None:
    resp = await gateway.client.get("/oauth2/auth", headers={"X-Forwarded-Uri": "/app/"})
    assert resp.status == 401
    public = await gateway.client.get("/oauth2/auth", headers={"X-Forwarded-Uri": "/open/page",
                                                                "X-Auth-Request-User": "mallory"})
    assert public.status == 202
    assert "X-Auth-Request-User" not in public.headers
    hostile = await gateway.client.get("/oauth2/auth", headers={"X-Forwarded-Uri": "//evil/../open/x"})
    assert hostile.status == 401  # not public: dot segments


async def test_access_token_header_switched_off(gateway_factory: Any) -> None:
    gw = await gateway_factory(headers={"access_token": False})
    async with await signed_in(gw) as browser:
        resp = await browser.get(f"{gw.url}/oauth2/auth")
        assert resp.status == 202 and "Authorization" not in resp.headers
        seen = await (await browser.get(f"{gw.url}/app", headers={"Authorization": "Bearer forged"})).json()
        assert not [v for n, v in seen["headers"] if n.lower() == "authorization"]


@pytest.mark.parametrize(("rd", "allowed"), [
    ("https://app.example.com/x?y=1", True),
    ("https://a.b.example.com:8443/", True),
    ("https://evil.example.com.attacker.net/", False),
    ("https://user@app.example.com/", False),
    ("//app.example.com/", False),
    ("ftp://app.example.com/", False),
])
async def test_start_accepts_absolute_rd_only_for_allow_listed_hosts(gateway: Any, rd: str, allowed: bool) -> None:
    async with gateway.browser() as browser:
        result = await browser_login(browser, f"{gateway.url}/oauth2/start?{URL.build(query={'rd': rd}).query_string}",
                                     stop_at=lambda u: u.host != "127.0.0.1" or u.path == "/")
        assert result.url.path == "/oauth2/callback"  # stopped on the callback's redirect
        location = result.headers["Location"]
        assert location == (rd if allowed else "/")


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/oauth2/auth/app/x", 202),
    ("GET", "/oauth2/auth/admin/x", 403),
    ("DELETE", "/oauth2/auth/api/x?y=1", 403),
    ("POST", "/oauth2/auth/api/x", 202),
])
async def test_envoy_ext_authz_path_prefix(gateway: Any, method: str, path: str, status: int) -> None:
    async with await signed_in(gateway) as browser:
        resp = await browser.request(method, f"{gateway.url}{path}", headers={"Accept": "application/json"})
        assert resp.status == status, await resp.text()
        if status == 202:
            assert resp.headers["X-Auth-Request-User"] == "alice"
    public = await gateway.client.get("/oauth2/auth/open/x")
    assert public.status == 202
