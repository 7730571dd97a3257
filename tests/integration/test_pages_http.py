"""The gateway's pages and request ids over HTTP: JSON for machines, pages for people, ids end to end."""

from __future__ import annotations

import re
from typing import Any

from yarl import URL

from tests.conftest import free_port
from tests.support.op import browser_login

HEX_ID = re.compile(r"^[0-9a-f]{32}$")


def request_ids_seen(body: dict[str, Any]) -> list[str]:
    return [value for name, value in body["headers"] if name.lower() in ("x-request-id", "x_request_id")]


async def test_json_error_format_is_unchanged_and_names_the_request_id(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    resp = await gw.client.get("/api/x", headers={"Accept": "application/json", "X-Request-Id": "trace-42"})
    body = await resp.json()
    assert resp.status == 401 and set(body) == {"error", "error_description", "request_id"}
    assert body == {"error": "unauthenticated", "error_description": "Authentication is required.",
                    "request_id": "trace-42"}
    assert resp.headers["X-Request-Id"] == "trace-42" and resp.headers["WWW-Authenticate"] == "Bearer"
    bad = await gw.client.get("/api/x", headers={"Accept": "application/json", "X-Request-Id": "a b<c>"})
    rid = (await bad.json())["request_id"]
    assert HEX_ID.match(rid) and bad.headers["X-Request-Id"] == rid


async def test_browser_gets_a_page_in_its_language(gateway_factory: Any) -> None:
    gw = await gateway_factory(oidc={"issuer": f"http://127.0.0.1:{free_port()}"})
    for lang, expected, title in (("zh-CN,zh;q=0.9", "zh-CN", "登录服务暂不可用"),
                                  ("en-GB", "en", "Sign-in service unavailable"), ("", "en", "Sign-in service")):
        resp = await gw.client.get("/x", headers={"Accept": "text/html", "Accept-Language": lang})
        text = await resp.text()
        assert resp.status == 503 and resp.headers["Content-Language"] == expected
        assert f'<html lang="{expected}">' in text and title in text and "provider_unavailable" in text
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert resp.headers["X-Frame-Options"] == "DENY" and resp.headers["Cache-Control"] == "no-store"


async def test_upstream_receives_the_request_id(gateway_factory: Any) -> None:
    gw = await gateway_factory(access={"public_paths": ["^/pub/"]})
    sane = await (await gw.client.get("/pub/a", headers={"X-Request-Id": "lb-123.a_b"})).json()
    assert request_ids_seen(sane) == ["lb-123.a_b"]
    none = await (await gw.client.get("/pub/a")).json()
    [generated] = request_ids_seen(none)
    assert HEX_ID.match(generated)
    spoofed = await (await gw.client.get("/pub/a", headers=[("X-Request-Id", "x\u00e9y"), ("X_Request_Id", "cgi")]))\
        .json()
    [replaced] = request_ids_seen(spoofed)
    assert HEX_ID.match(replaced)
    twice = await (await gw.client.get("/pub/a", headers=[("X-Request-Id", "a"), ("X-Request-Id", "b")])).json()
    [one] = request_ids_seen(twice)
    assert HEX_ID.match(one)


async def test_signed_out_page_is_a_page_not_a_redirect(gateway_factory: Any) -> None:
    gw = await gateway_factory()
    resp = await gw.client.get("/oauth2/signed_out?state=abc", headers={"Accept-Language": "zh"},
                               allow_redirects=False)
    text = await resp.text()
    assert resp.status == 200 and "Location" not in resp.headers and "已退出登录" in text
    assert 'href="/oauth2/start?rd=%2F"' in text


async def test_sign_out_lands_on_the_signed_out_page_by_default(gateway_factory: Any, op: Any) -> None:
    gw = await gateway_factory()
    async with gw.browser() as browser:
        await browser_login(browser, f"{gw.url}/")
        resp = await browser.get(f"{gw.url}/oauth2/sign_out", allow_redirects=False)
        location = URL(resp.headers["Location"])
        assert str(location).startswith(op.issuer)
        assert location.query["post_logout_redirect_uri"] == f"{gw.url}/oauth2/signed_out"
        # The OP's confirmation, then back to the signed-out page: no bounce into a new login.
        result = await browser_login(browser, location)
        assert result.status == 200 and result.url.path == "/oauth2/signed_out" and "Signed out" in result.body


async def test_sign_out_without_end_session_endpoint(gateway_factory: Any) -> None:
    gw = await gateway_factory(oidc={"issuer": f"http://127.0.0.1:{free_port()}"})  # no metadata, no endpoint
    resp = await gw.client.get("/oauth2/sign_out", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/oauth2/signed_out"
    resp = await gw.client.get("/oauth2/sign_out?rd=/bye", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/bye"
    resp = await gw.client.get("/oauth2/sign_out?rd=//evil.example", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/"
