"""preserve_post over HTTP: which POSTs are kept across the login, and what the login ends with."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.support.op import browser_login
from tests.support.records import open_record

FORM = [("title", "季度报告 & <draft>"), ("note", "one\r\ntwo"), ("tag", "a"), ("tag", "b"), ("empty", "")]
BODY = urlencode(FORM)


def form_headers(gw: Any, **extra: str) -> dict[str, str]:
    return {"Accept": "text/html,application/xhtml+xml", "Content-Type": "application/x-www-form-urlencoded",
            "Origin": gw.url, "Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "navigate", **extra}


async def preserving_gateway(gateway_factory: Any, echo_upstream: str, *, oidc: dict[str, Any] | None = None,
                             **upstream: Any) -> Any:
    return await gateway_factory(oidc=oidc or {}, upstreams=[
        {"path": "/", "url": echo_upstream},
        {"path": "/forms", "url": echo_upstream, "preserve_post": True, **upstream},
    ])


def login_records(redis_client: Any, gw: Any) -> list[dict[str, Any]]:
    return [open_record(gw.settings, k, redis_client.get(k))
            for k in redis_client.scan_iter(match=f"{gw.settings.session.key_prefix}l:*")]


@pytest.mark.parametrize("response_mode", ["query", "form_post"])
async def test_form_post_is_replayed_after_login(gateway_factory: Any, echo_upstream: str, op: Any,
                                                 redis_client: Any, response_mode: str) -> None:
    gw = await preserving_gateway(gateway_factory, echo_upstream, oidc={"response_mode": response_mode})
    async with gw.browser() as browser:
        resp = await browser.post(f"{gw.url}/forms/save?x=1", data=BODY, headers=form_headers(gw),
                                  allow_redirects=False)
        assert resp.status == 303 and resp.headers["Location"].startswith(op.issuer)
        [record] = login_records(redis_client, gw)
        assert record["form"] == [list(pair) for pair in FORM]
        page = await browser_login(browser, resp.headers["Location"])
        # The login ends with the replay page on the callback, not with a redirect.
        assert page.status == 200 and page.url.path == "/oauth2/callback", page.body
        assert "_oidc_gateway=" in page.headers["Set-Cookie"]
        [nonce] = re.findall(r'<script nonce="([^"]+)">', page.body)
        assert f"'nonce-{nonce}'" in page.headers["Content-Security-Policy"]
        assert 'action="/forms/save?x=1"' in page.body
        fields = re.findall(r'<input type="hidden" name="([^"]*)" value="([^"]*)">', page.body)
        assert fields == [("title", "季度报告 &amp; &lt;draft&gt;"), ("note", "one&#13;&#10;two"), ("tag", "a"),
                          ("tag", "b"), ("empty", "")]
        assert login_records(redis_client, gw) == []  # the form left the store with the login
        # What the browser then sends (the same fields, re-encoded) reaches the upstream as a POST.
        replay = await browser.post(f"{gw.url}/forms/save?x=1", data=BODY, headers=form_headers(gw))
        seen = await replay.json()
        assert replay.status == 200 and seen["method"] == "POST" and seen["query_string"] == "x=1"
        assert ["X-Auth-Request-User", "alice"] in seen["headers"]


@pytest.mark.parametrize(("path", "headers", "body"), [
    ("/other", {}, BODY),  # an upstream without preserve_post
    ("/forms/x", {"Origin": "http://evil.example"}, BODY),  # cross-site: login CSRF into a POST
    ("/forms/x", {"Origin": "null"}, BODY),
    ("/forms/x", {"Origin": ""}, BODY),  # no Origin at all
    ("/forms/x", {"Sec-Fetch-Site": "same-site"}, BODY),
    ("/forms/x", {"Sec-Fetch-Mode": "cors"}, BODY),  # fetch()/XHR: 401, never a redirect
    ("/forms/x", {"Accept": "application/json"}, BODY),
    ("/forms/x", {"Content-Type": "multipart/form-data; boundary=x"}, BODY),
    ("/forms/x", {"Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1"}, BODY),
    ("/forms/x", {"Content-Type": "text/plain"}, BODY),
    ("/forms/x", {"Content-Encoding": "gzip"}, BODY),
    ("/forms/x", {}, "a=%FF%FE"),  # not UTF-8
    ("/forms/x", {}, "a=" + "x" * 5000),  # over preserve_post_max_size (4 KiB here)
    ("/forms/x", {}, "&".join(["a=1"] * 1001)),  # too many fields
])
async def test_posts_that_are_not_preserved_get_401(gateway_factory: Any, echo_upstream: str, redis_client: Any,
                                                    path: str, headers: dict[str, str], body: str) -> None:
    gw = await preserving_gateway(gateway_factory, echo_upstream, preserve_post_max_size=1024 * 4)
    sent = {k: v for k, v in form_headers(gw, **headers).items() if v}
    resp = await gw.client.post(path, data=body.encode(), headers=sent, allow_redirects=False)
    assert resp.status == 401 and "Location" not in resp.headers
    assert login_records(redis_client, gw) == []


async def test_the_size_bound_is_inclusive(gateway_factory: Any, echo_upstream: str) -> None:
    gw = await preserving_gateway(gateway_factory, echo_upstream, preserve_post_max_size=10)
    fits = await gw.client.post("/forms/x", data=b"a=12345678", headers=form_headers(gw), allow_redirects=False)
    too_big = await gw.client.post("/forms/x", data=b"a=123456789", headers=form_headers(gw), allow_redirects=False)
    assert (fits.status, too_big.status) == (303, 401)


async def test_chunked_form_is_not_preserved(gateway_factory: Any, echo_upstream: str) -> None:
    gw = await preserving_gateway(gateway_factory, echo_upstream)

    async def chunks() -> Any:
        yield b"a=1"

    resp = await gw.client.post("/forms/x", data=chunks(), headers=form_headers(gw), allow_redirects=False)
    assert resp.status == 401


async def test_a_live_session_posts_straight_through(gateway_factory: Any, echo_upstream: str) -> None:
    gw = await preserving_gateway(gateway_factory, echo_upstream)
    async with gw.browser() as browser:
        await browser_login(browser, f"{gw.url}/")
        resp = await browser.post(f"{gw.url}/forms/x", data=BODY, headers=form_headers(gw))
        assert resp.status == 200 and (await resp.json())["body_size"] == len(BODY.encode())
