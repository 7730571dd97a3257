"""preserve_post in headless Chromium: a form submitted after the session expired survives the re-login."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from playwright.async_api import Browser, expect

from tests.support.browser import Journey, new_journey, op_allow, op_login

TITLE = "季度报告 Q3 & <draft>"
NOTE = 'line one\nline two: 你好, "quoted" + 100%'
SAVED = [("title", TITLE), ("note", NOTE.replace("\n", "\r\n"))]  # a textarea submits CRLF


async def fill_form(journey: Journey) -> None:
    await journey.page.get_by_label("Title").fill(TITLE)
    await journey.page.get_by_label("Note").fill(NOTE)


async def fill_form_with_expired_session(journey: Journey, gw: Any, clock: Any) -> str:
    """Log in, submit the form once (the control: the body the app gets with a live session), fill
    it in again, then end the gateway session and forget the OP's session too, so that the next
    submission needs a full login. Returns the control body."""
    page = journey.page
    await page.goto(f"{gw.url}/app/")
    await op_login(page)
    await op_allow(page)
    await page.wait_for_url(f"{gw.url}/app/")
    await fill_form(journey)
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(f"{gw.url}/app/notes?via=form")
    control = await page.locator("#body").inner_text()
    await page.goto(f"{gw.url}/app/")
    await fill_form(journey)
    clock.advance(gw.settings.session.idle_timeout + 1)  # the gateway session is over
    await journey.context.clear_cookies(name=re.compile(r"^(?!_oidc_gateway)"))  # and so is the OP's
    return control


async def test_form_post_survives_relogin(gateway_factory: Any, op: Any, clock: Any, webapp_upstream: str,
                                          browser: Browser, screenshot_dir: Path) -> None:
    gw = await gateway_factory(upstreams=[{"path": "/", "url": webapp_upstream, "preserve_post": True}])
    journey = await new_journey(browser, screenshot_dir)
    control = await fill_form_with_expired_session(journey, gw, clock)
    page = journey.page
    mark = len(journey.requests)
    await page.get_by_role("button", name="Save").click()
    await page.wait_for_url(f"{op.issuer}/interaction/**")  # a full login: the OP asks for the password
    await op_login(page)
    await op_allow(page)
    await page.wait_for_url(f"{gw.url}/app/notes?via=form")  # the replay page submitted itself
    await expect(page.get_by_role("heading", name="Saved")).to_be_visible()
    await expect(page.locator("#user")).to_have_text("alice")
    body = await page.locator("#body").inner_text()
    assert parse_qsl(body, keep_blank_values=True) == SAVED
    assert body == control  # byte for byte what the form sent with a live session
    posts = [url for url in journey.requests[mark:] if url.startswith(f"{gw.url}/app/notes")]
    assert posts == [f"{gw.url}/app/notes?via=form"] * 2  # the original POST, then its replay
    assert journey.status_of(r"/oauth2/callback") == 200  # the replay page, not a redirect
    await journey.screenshot("07-form-replayed")


async def test_form_post_replay_works_without_javascript(gateway_factory: Any, op: Any, clock: Any,
                                                         webapp_upstream: str, browser: Browser,
                                                         screenshot_dir: Path) -> None:
    gw = await gateway_factory(upstreams=[{"path": "/", "url": webapp_upstream, "preserve_post": True}])
    journey = await new_journey(browser, screenshot_dir, javascript=False)
    await fill_form_with_expired_session(journey, gw, clock)
    page = journey.page
    await page.get_by_role("button", name="Save").click()
    await op_login(page)
    await op_allow(page)
    await page.wait_for_url(f"{gw.url}/oauth2/callback?**")  # no script: the page waits for a click
    await expect(page.get_by_role("heading", name="Continuing…")).to_be_visible()
    await journey.screenshot("06-replay-post")
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url(f"{gw.url}/app/notes?via=form")
    assert parse_qsl(await page.locator("#body").inner_text(), keep_blank_values=True) == SAVED
    await expect(page.locator("#user")).to_have_text("alice")
