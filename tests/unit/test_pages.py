"""Pages, texts and language choice, request ids: no sockets (aiohttp's mocked requests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from gateway.errors import (
    Forbidden,
    GatewayError,
    LoginCancelled,
    LoginError,
    LoginExpired,
    PayloadTooLarge,
    ProviderError,
    ProviderUnavailable,
    StoreUnavailable,
    Unauthenticated,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.oidc.client import AuthRequest
from gateway.proxy.headers import upstream_headers
from gateway.session.model import PendingLogin
from gateway.web.messages import error_text, negotiate
from gateway.web.pages import TEMPLATES, Pages
from gateway.web.request_id import REQUEST_ID, sane_request_id


def request(path: str = "/app/x?y=1", *, method: str = "GET", lang: str | None = None,
            request_id: str = "rid-1") -> web.Request:
    headers = {"Accept": "text/html"}
    if lang is not None:
        headers["Accept-Language"] = lang
    req = make_mocked_request(method, path, headers=headers)
    req[REQUEST_ID] = request_id
    return req


@pytest.mark.parametrize(("header", "expected"), [
    (None, "en"), ("", "en"), ("fr-FR, de;q=0.8", "en"),
    ("zh", "zh"), ("zh-CN", "zh"), ("zh-Hans", "zh"), ("zh-Hans-CN", "zh"), ("ZH-cn", "zh"), ("zh-SG", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en;q=0.5, zh;q=0.9", "zh"),  # q-values, not order, decide
    ("zh;q=0.5, en;q=0.5", "zh"),  # a tie: the earlier entry
    ("zh;q=0, en", "en"), ("en;q=0, zh;q=0.1", "zh"),  # q=0 means "not this one"
    ("zh-TW", "en"), ("zh-Hant-HK", "en"), ("zh-TW,zh;q=0.9,en;q=0.8", "zh"),  # Traditional falls through
    ("zh;q=abc, en;q=0.2", "en"), ("zh;q=2", "en"), ("zh;q=nan", "en"),  # malformed q: the entry is skipped
    ("*", "en"), ("fr, zh;q=0.1", "zh"),
    ("fr," * 40 + "zh", "en"),  # only the first 32 entries are read
])
def test_language_negotiation(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


@pytest.mark.parametrize("exc", [
    Unauthenticated(), Forbidden(), LoginError(), LoginExpired(), LoginCancelled(), ProviderError(),
    ProviderUnavailable(), StoreUnavailable(), PayloadTooLarge(), UpstreamError(), UpstreamTimeout(), GatewayError(),
])
def test_every_error_has_its_own_text_in_both_languages(exc: GatewayError) -> None:
    _, en = error_text(exc.code, "en")
    _, zh = error_text(exc.code, "zh")
    assert en.title and en.message and en.action and zh.title and zh.message and zh.action
    assert re.search(r"[\u4e00-\u9fff]", zh.title + zh.message + zh.action)
    if exc.code != "server_error":  # not the generic fallback
        assert en.title != error_text("server_error", "en")[1].title


def test_error_page_shows_the_fixed_text_never_the_detail() -> None:
    pages = Pages()
    response = pages.error(request(lang="zh-CN"), LoginError("secret internal detail <b>"))
    body = response.text or ""
    assert response.status == 400 and "登录失败" in body and '<html lang="zh-CN">' in body
    assert "secret internal detail" not in body and "login_failed" in body and "rid-1" in body
    assert response.headers["Content-Language"] == "zh-CN" and "Accept-Language" in response.headers["Vary"]
    assert response.headers["X-Request-Id"] == "rid-1" and response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert response.content_type == "text/html" and response.charset == "utf-8"


def test_error_page_buttons_point_at_same_origin_paths_and_are_escaped() -> None:
    pages = Pages()
    body = pages.error(request('/a/"><script>x</script>?q=<1>'), UpstreamError()).text or ""
    assert "<script>" not in body and 'href="/a/&quot;&gt;&lt;script&gt;x&lt;/script&gt;?q=&lt;1&gt;"' in body
    assert 'href="/"' in (pages.error(request("//evil.example/x"), UpstreamError()).text or "")
    assert 'href="/"' in (pages.error(request("/x", method="POST"), UpstreamError()).text or "")
    assert 'href="/"' in (pages.error(request("/oauth2/callback?code=c"), ProviderUnavailable()).text or "")
    sign_in = pages.error(request("/app/x?y=1"), Unauthenticated()).text or ""
    assert 'href="/oauth2/start?rd=%2Fapp%2Fx%3Fy%3D1"' in sign_in
    assert 'href="/oauth2/sign_out"' in (pages.error(request(), Forbidden()).text or "")
    assert 'href="/oauth2/start?rd=%2F"' in (pages.error(request(), LoginExpired()).text or "")


async def test_signed_out_page() -> None:
    response = await Pages().signed_out(request("/oauth2/signed_out?state=s", lang="zh"))
    body = response.text or ""
    assert response.status == 200 and "已退出登录" in body and 'href="/oauth2/start?rd=%2F"' in body
    assert "Location" not in response.headers


def test_replay_page_escapes_fields_and_runs_by_nonce() -> None:
    fields = [("title", 'a"b<c>&d'), ("note", "one\r\ntwo\nthree"), ("x\"><script>", "")]
    response = Pages().replay_post(request("/oauth2/callback?code=c&state=s"), "/app/notes?via=form", fields)
    body = response.text or ""
    assert '<input type="hidden" name="title" value="a&quot;b&lt;c&gt;&amp;d">' in body
    assert '<input type="hidden" name="note" value="one&#13;&#10;two&#10;three">' in body
    assert 'name="x&quot;&gt;&lt;script&gt;"' in body and body.count("<script") == 1
    assert 'action="/app/notes?via=form"' in body
    [nonce] = re.findall(r'<script nonce="([^"]+)">', body)
    csp = response.headers["Content-Security-Policy"]
    assert f"script-src 'nonce-{nonce}'" in csp and "default-src 'none'" in csp and "unsafe-inline'; base" in csp
    assert response.headers["Referrer-Policy"] == "strict-origin" and response.headers["Cache-Control"] == "no-store"
    again = Pages().replay_post(request(), "/x", fields).text or ""
    assert nonce not in again  # a fresh nonce for every response
    assert 'action="/"' in (Pages().replay_post(request(), "//evil.example/", fields).text or "")


def test_pages_dir_overrides_some_templates_and_falls_back_for_the_rest(tmp_path: Path) -> None:
    (tmp_path / "error.html").write_text("<p>$title|$code|$request_id|$unknown|$message</p>", encoding="utf-8")
    (tmp_path / "eror.html").write_text("typo", encoding="utf-8")
    pages = Pages(tmp_path)
    body = pages.error(request(request_id="r-9"), Forbidden()).text
    message = error_text("access_denied", "en")[1].message
    assert body == f"<p>Access denied|access_denied|r-9|$unknown|{message}</p>"
    assert set(TEMPLATES) == {"error.html", "signed_out.html", "replay_post.html"}


async def test_a_template_missing_from_pages_dir_is_the_built_in_one(tmp_path: Path) -> None:
    (tmp_path / "error.html").write_text("custom", encoding="utf-8")
    response = await Pages(tmp_path).signed_out(request())
    assert response.text == (await Pages().signed_out(request())).text and "Signed out" in (response.text or "")


@pytest.mark.parametrize(("values", "expected"), [
    ([], None), (["abc-123"], "abc-123"), (["A.b_c-9"], "A.b_c-9"), (["x" * 128], "x" * 128),
    (["x" * 129], None), (["a b"], None), (["<b>"], None), (["a\r\nb"], None), (["é"], None), ([""], None),
    (["one", "two"], None),
])
def test_sane_request_id(values: list[str], expected: str | None) -> None:
    assert sane_request_id(values) == expected


def test_upstream_gets_the_gateway_request_id_only() -> None:
    headers = CIMultiDict([("X-Request-Id", "from-client"), ("x_request_id", "cgi-twin"), ("Accept", "*/*")])
    out = upstream_headers(headers, None, cookie_names=frozenset(), peer="127.0.0.1", forwarded_proto="http",
                           request_id="chosen")
    assert out.getall("X-Request-Id") == ["chosen"] and "x_request_id" not in out
    untouched = upstream_headers(headers, None, cookie_names=frozenset(), peer=None, forwarded_proto="http")
    assert untouched.getall("X-Request-Id") == ["from-client"]


def test_pending_login_keeps_a_preserved_form() -> None:
    auth = AuthRequest(state="s", nonce="n", code_verifier="v", rd="/app/notes?via=form")
    pending = PendingLogin(request=auth, binding="b", created_at=1.0, form=(("a", "1"), ("a", "ü\r\n")))
    assert PendingLogin.loads(pending.dumps()) == pending
    assert "ü" not in repr(pending)  # user input stays out of logs and tracebacks
    plain = PendingLogin(request=auth, binding="b", created_at=1.0)
    assert b'"form"' not in plain.dumps() and PendingLogin.loads(plain.dumps()).form is None
