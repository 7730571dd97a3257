"""The login journey in headless Chromium: real OP pages, real gateway, an HTML app upstream, real sockets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, expect

from tests.support.browser import new_journey, op_allow, op_deny, op_login

DEEP_LINK = "/app/reports/2024?view=summary&q=caf%C3%A9+%26+tea&page=2"

FETCH = """async (url) => {
  const r = await fetch(url);
  return {status: r.status, redirected: r.redirected, type: r.headers.get("content-type"),
          www: r.headers.get("www-authenticate"), body: await r.text()};
}"""

XHR = """(url) => new Promise((resolve) => {
  const x = new XMLHttpRequest();
  x.open("GET", url);
  x.onload = () => resolve({status: x.status, url: x.responseURL, body: x.responseText});
  x.send();
})"""


async def test_deep_link_login_lands_exactly_there_and_reload_needs_no_login(
        gateway_factory: Any, op: Any, webapp_upstream: str, browser: Browser, screenshot_dir: Path) -> None:
    gw = await gateway_factory(upstreams=[{"path": "/", "url": webapp_upstream}])
    journey = await new_journey(browser, screenshot_dir)
    page = journey.page
    await page.goto(gw.url + DEEP_LINK)
    await page.wait_for_url(f"{op.issuer}/interaction/**")  # sent to the OP's sign-in page
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await journey.screenshot("01-op-sign-in")
    await op_login(page)
    await expect(page.get_by_role("heading", name="Authorize")).to_be_visible()
    await journey.screenshot("02-op-consent")
    await op_allow(page)
    await page.wait_for_url(gw.url + DEEP_LINK)
    assert page.url == gw.url + DEEP_LINK  # exactly the deep link, query string included
    await expect(page.locator("#path")).to_have_text("/app/reports/2024")
    await expect(page.locator("#query")).to_have_text("view=summary&q=caf%C3%A9+%26+tea&page=2")
    await expect(page.locator("#user")).to_have_text("alice")
    await journey.screenshot("03-landing")
    # One trip through the OP's authorization endpoint and our callback.
    assert len(journey.visited(f"{op.issuer}/auth?")) == 1
    assert len(journey.visited(f"{gw.url}/oauth2/callback")) == 1

    before = len(journey.requests)
    response = await page.reload()
    assert response is not None and response.status == 200
    assert page.url == gw.url + DEEP_LINK
    await expect(page.locator("#query")).to_have_text("view=summary&q=caf%C3%A9+%26+tea&page=2")
    after_reload = journey.requests[before:]
    assert after_reload == [gw.url + DEEP_LINK]  # one request, straight to the app: the OP was not visited


async def test_fetch_and_xhr_after_session_expiry_get_401_json(
        gateway_factory: Any, op: Any, clock: Any, webapp_upstream: str, browser: Browser,
        screenshot_dir: Path) -> None:
    gw = await gateway_factory(upstreams=[{"path": "/", "url": webapp_upstream}])
    journey = await new_journey(browser, screenshot_dir)
    page = journey.page
    await page.goto(f"{gw.url}/app/")
    await op_login(page)
    await op_allow(page)
    await page.wait_for_url(f"{gw.url}/app/")
    live = await page.evaluate(FETCH, "/api/items?x=1")
    assert live["status"] == 200 and json.loads(live["body"]) == {"path": "/api/items", "query_string": "x=1",
                                                                  "user": "alice"}

    clock.advance(gw.settings.session.idle_timeout + 1)  # the session is now past its idle timeout
    expired = await page.evaluate(FETCH, "/api/items?x=1")
    assert expired["status"] == 401 and not expired["redirected"]
    assert expired["type"].startswith("application/json") and expired["www"].startswith("Bearer")
    assert json.loads(expired["body"])["error"] == "unauthenticated"
    xhr = await page.evaluate(XHR, "/api/items?x=2")
    assert xhr["status"] == 401 and xhr["url"] == f"{gw.url}/api/items?x=2"  # no redirect followed
    assert json.loads(xhr["body"])["error"] == "unauthenticated"
    assert len(journey.visited(f"{op.issuer}/auth?")) == 1  # neither call went to the OP


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_sign_out_reaches_op_logout_and_protects_the_app_again(
        gateway_factory: Any, op: Any, browser: Browser, screenshot_dir: Path, lang: str) -> None:
    gw = await gateway_factory()
    journey = await new_journey(browser, screenshot_dir, lang=lang)
    page = journey.page
    await page.goto(f"{gw.url}/app/")
    await op_login(page)
    await op_allow(page)
    await page.wait_for_url(f"{gw.url}/app/")

    await page.goto(f"{gw.url}/oauth2/sign_out")
    await page.wait_for_url(f"{op.issuer}/session/end**")  # RP-initiated logout at the OP
    if lang == "en":
        await journey.screenshot("04-op-sign-out")
    await page.get_by_role("button", name="Yes, sign me out").click()
    await page.wait_for_url(f"{gw.url}/oauth2/signed_out**")  # the OP sent the browser back to us
    assert journey.visited(f"{op.issuer}/session/end/confirm")
    assert journey.status_of(r"/oauth2/signed_out") == 200
    title = {"en": "Signed out", "zh": "已退出登录"}[lang]
    await expect(page.get_by_role("heading", name=title)).to_be_visible()
    assert await page.locator("html").get_attribute("lang") == {"en": "en", "zh": "zh-CN"}[lang]
    await journey.screenshot(f"05-signed-out-{lang}")

    # The app is protected again, and the OP asks for the password again (its session ended too).
    await page.goto(f"{gw.url}/app/")
    await page.wait_for_url(f"{op.issuer}/interaction/**")
    await expect(page.get_by_label("Password")).to_be_visible()
    # The signed-out page's button starts a fresh login; it never loops on its own.
    await page.goto(f"{gw.url}/oauth2/signed_out")
    await page.get_by_role("link", name={"en": "Sign in again", "zh": "重新登录"}[lang]).click()
    await page.wait_for_url(f"{op.issuer}/interaction/**")
    await expect(page.get_by_label("Password")).to_be_visible()


@pytest.mark.parametrize("lang", ["en", "zh"])
async def test_consent_denied_shows_a_readable_page_without_a_loop(
        gateway_factory: Any, op: Any, browser: Browser, screenshot_dir: Path, lang: str) -> None:
    gw = await gateway_factory()
    journey = await new_journey(browser, screenshot_dir, lang=lang)
    page = journey.page
    await page.goto(f"{gw.url}/app/")
    await op_login(page)
    await op_deny(page)
    await page.wait_for_url(re.compile(re.escape(f"{gw.url}/oauth2/callback") + r"\?.*error=access_denied"))
    await page.wait_for_load_state("networkidle")  # nothing further happens on its own
    assert page.url.startswith(f"{gw.url}/oauth2/callback")
    assert journey.status_of(r"/oauth2/callback") == 400
    title = {"en": "Sign-in cancelled", "zh": "登录已取消"}[lang]
    await expect(page.get_by_role("heading", name=title)).to_be_visible()
    await expect(page.locator("code").first).to_have_text(re.compile(r"^[0-9a-f]{32}$"))  # the request id
    assert len(journey.visited(f"{gw.url}/app/")) == 1 and len(journey.visited(f"{op.issuer}/auth?")) == 1
    await journey.screenshot(f"error-login-cancelled-{lang}")
