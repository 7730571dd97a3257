"""Headless Debian Chromium, driven by Playwright's async API, for the e2e tests.

The browser is the system's `/usr/bin/chromium` (installed by scripts/setup; override with
$CHROMIUM), never one downloaded by Playwright. The flags keep it off the network: no background
requests to Google, no component updates, no QUIC. Helpers act like a person: they type into the
test OP's fields and click its buttons, and wait on URLs and elements (Playwright's auto-waiting),
never on time.

Screenshots go to docs/screenshots/ when SCREENSHOTS=1 (to refresh the committed ones), otherwise
to the test's tmp_path; each is a phone-sized viewport (390x844 CSS px).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from playwright.async_api import Browser, BrowserContext, Page, Request, Response

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "DOCS_SCREENSHOTS", "PHONE", "Journey", "new_journey", "op_allow",
           "op_deny", "op_login"]

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--no-default-browser-check",
]
PHONE = {"width": 390, "height": 844}
DOCS_SCREENSHOTS = Path(__file__).resolve().parent.parent.parent / "docs" / "screenshots"
LOCALES = {"en": "en-US", "zh": "zh-CN"}
TIMEOUT_MS = 15_000


@dataclass
class Journey:
    """One browser context (its own cookies) and page, with a log of every request and response."""

    context: BrowserContext
    page: Page
    screenshot_dir: Path
    requests: list[str] = field(default_factory=list)
    responses: list[tuple[str, int]] = field(default_factory=list)

    def visited(self, prefix: str) -> list[str]:
        return [url for url in self.requests if url.startswith(prefix)]

    def status_of(self, pattern: str) -> int:
        """The status of the last response whose URL matches the regex `pattern`."""
        return [status for url, status in self.responses if re.search(pattern, url)][-1]

    async def screenshot(self, name: str) -> Path:
        path = self.screenshot_dir / f"{name}.png"
        await self.page.screenshot(path=path, full_page=True)
        return path


async def new_journey(browser: Browser, screenshot_dir: Path, *, lang: str = "en",
                      javascript: bool = True) -> Journey:
    # is_mobile: the viewport meta tag counts, as on a phone (a page without one is laid out 980px wide).
    context = await browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=1,
                                        locale=LOCALES[lang], java_script_enabled=javascript)
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    journey = Journey(context, page, screenshot_dir)

    def on_request(request: Request) -> None:
        journey.requests.append(request.url)

    def on_response(response: Response) -> None:
        journey.responses.append((response.url, response.status))

    page.on("request", on_request)
    page.on("response", on_response)
    return journey


async def op_login(page: Page, username: str = "alice", password: str = "alice-password") -> None:  # noqa: S107
    """Type the credentials into the test OP's sign-in form and press its button."""
    await page.get_by_label("Username").press_sequentially(username)
    await page.get_by_label("Password").press_sequentially(password)
    await page.get_by_role("button", name="Sign in").click()


async def op_allow(page: Page) -> None:
    await page.get_by_role("button", name="Allow").click()


async def op_deny(page: Page) -> None:
    await page.get_by_role("button", name="Deny").click()
