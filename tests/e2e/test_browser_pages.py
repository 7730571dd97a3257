"""The gateway's own pages in headless Chromium: what a person sees when something goes wrong.

Each page is checked for its status, its title in the browser's language (Accept-Language from the
context's locale), the request id and error code in its footer, that it fits a phone's width, and
that it loaded nothing but itself (self-contained).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import free_port
from tests.support.browser import PHONE, Journey, new_journey, op_allow, op_login

LANGS = ["en", "zh"]
REQUEST_ID = re.compile(r"^[0-9a-f]{32}$")


async def check_error_page(journey: Journey, *, status: int, code: str, title: str) -> None:
    page = journey.page
    await expect(page.get_by_role("heading", name=title)).to_be_visible()
    footer = page.locator("footer code")
    await expect(footer.nth(0)).to_have_text(REQUEST_ID)
    await expect(footer.nth(1)).to_have_text(code)
    assert journey.status_of(re.escape(page.url) + "$") == status
    assert journey.requests[-1] == page.url  # no stylesheet, font, image or script was fetched
    await check_fits_phone(page)


async def check_fits_phone(page: Page) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], "the page scrolls sideways on a phone"
    box = await page.locator("main").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]


async def logged_in(journey: Journey, url: str, *, username: str = "alice") -> None:
    await journey.page.goto(url)
    await op_login(journey.page, username, f"{username}-password")
    await op_allow(journey.page)


@pytest.mark.parametrize("lang", LANGS)
async def test_access_denied_page(gateway_factory: Any, op: Any, browser: Browser, screenshot_dir: Path,
                                  lang: str) -> None:
    gw = await gateway_factory(access={"allowed_groups": ["auditors"]})
    journey = await new_journey(browser, screenshot_dir, lang=lang)
    await logged_in(journey, f"{gw.url}/app/")
    await journey.page.wait_for_url(f"{gw.url}/app/")
    await check_error_page(journey, status=403, code="access_denied",
                           title={"en": "Access denied", "zh": "无权访问"}[lang])
    await journey.screenshot(f"error-access-denied-{lang}")
    # Its button signs out (at the OP too), so that another account can sign in.
    other_account = {"en": "Sign in with a different account", "zh": "使用其他账号登录"}[lang]
    await journey.page.get_by_role("link", name=other_account).click()
    await journey.page.wait_for_url(f"{op.issuer}/session/end**")


@pytest.mark.parametrize("lang", LANGS)
async def test_login_expired_page(gateway_factory: Any, op: Any, browser: Browser, screenshot_dir: Path,
                                  lang: str) -> None:
    gw = await gateway_factory()
    journey = await new_journey(browser, screenshot_dir, lang=lang)
    await logged_in(journey, f"{gw.url}/app/")
    await journey.page.wait_for_url(f"{gw.url}/app/")
    [callback] = journey.visited(f"{gw.url}/oauth2/callback")
    await journey.page.goto(callback)  # the spent callback URL again: from history, a bookmark, a reload
    await check_error_page(journey, status=400, code="login_expired",
                           title={"en": "Sign-in expired", "zh": "登录已过期"}[lang])
    await journey.screenshot(f"error-login-expired-{lang}")
    await journey.page.get_by_role("link", name={"en": "Sign in again", "zh": "重新登录"}[lang]).click()
    await op_allow(journey.page)  # the OP still knows alice; it only asks for consent (prompt=consent)
    await journey.page.wait_for_url(f"{gw.url}/")


@pytest.mark.parametrize("lang", LANGS)
async def test_provider_unavailable_page(gateway_factory: Any, browser: Browser, screenshot_dir: Path,
                                         lang: str) -> None:
    gw = await gateway_factory(oidc={"issuer": f"http://127.0.0.1:{free_port()}"})  # nothing listens there
    journey = await new_journey(browser, screenshot_dir, lang=lang)
    await journey.page.goto(f"{gw.url}/app/?x=1")
    await check_error_page(journey, status=503, code="provider_unavailable",
                           title={"en": "Sign-in service unavailable", "zh": "登录服务暂不可用"}[lang])
    await journey.screenshot(f"error-provider-unavailable-{lang}")
    # "Try again" reloads the page that failed, not some other page.
    retry = journey.page.get_by_role("link", name={"en": "Try again", "zh": "重试"}[lang])
    href = await retry.get_attribute("href")
    assert href == "/app/?x=1"


@pytest.mark.parametrize("lang", LANGS)
async def test_upstream_unavailable_page(gateway_factory: Any, browser: Browser, screenshot_dir: Path,
                                         lang: str) -> None:
    gw = await gateway_factory(upstreams=[{"path": "/", "url": f"http://127.0.0.1:{free_port()}"}],
                               access={"public_paths": ["^/status$"]})
    journey = await new_journey(browser, screenshot_dir, lang=lang)
    await journey.page.goto(f"{gw.url}/status")
    await check_error_page(journey, status=502, code="bad_gateway",
                           title={"en": "Application unavailable", "zh": "应用暂不可用"}[lang])
    await journey.screenshot(f"error-upstream-unavailable-{lang}")


@pytest.mark.parametrize("lang", LANGS)
async def test_session_store_unavailable_page(gateway_factory: Any, browser: Browser, screenshot_dir: Path,
                                              lang: str) -> None:
    gw = await gateway_factory(session={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    journey = await new_journey(browser, screenshot_dir, lang=lang)
    await journey.page.goto(f"{gw.url}/app/")
    await check_error_page(journey, status=503, code="store_unavailable",
                           title={"en": "Temporarily unavailable", "zh": "服务暂不可用"}[lang])
    await journey.screenshot(f"error-temporarily-unavailable-{lang}")


@pytest.mark.parametrize("lang", LANGS)
async def test_form_post_without_a_session_gets_the_sign_in_page(
        gateway_factory: Any, clock: Any, webapp_upstream: str, browser: Browser, screenshot_dir: Path,
        lang: str) -> None:
    # preserve_post is off: the form is not kept, and the browser's Back button still has it.
    gw = await gateway_factory(upstreams=[{"path": "/", "url": webapp_upstream}])
    journey = await new_journey(browser, screenshot_dir, lang=lang)
    await logged_in(journey, f"{gw.url}/app/")
    page = journey.page
    await page.get_by_label("Title").fill("draft")
    clock.advance(gw.settings.session.idle_timeout + 1)
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(f"{gw.url}/app/notes?via=form")
    await check_error_page(journey, status=401, code="unauthenticated",
                           title={"en": "Sign-in required", "zh": "需要登录"}[lang])
    await journey.screenshot(f"error-sign-in-required-{lang}")


async def test_request_id_from_the_client_is_shown(gateway_factory: Any, browser: Browser,
                                                   screenshot_dir: Path) -> None:
    gw = await gateway_factory(oidc={"issuer": f"http://127.0.0.1:{free_port()}"})
    journey = await new_journey(browser, screenshot_dir)
    await journey.context.set_extra_http_headers({"X-Request-Id": "lb-7f3a.91_x"})
    response = await journey.page.goto(f"{gw.url}/app/")
    assert response is not None and response.headers["x-request-id"] == "lb-7f3a.91_x"
    await expect(journey.page.locator("footer code").first).to_have_text("lb-7f3a.91_x")
    await journey.context.set_extra_http_headers({"X-Request-Id": "<b>x</b>"})  # not a sane token: replaced
    response = await journey.page.goto(f"{gw.url}/app/")
    assert response is not None and REQUEST_ID.match(response.headers["x-request-id"])
    await expect(journey.page.locator("footer code").first).to_have_text(response.headers["x-request-id"])
