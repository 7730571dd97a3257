"""E2E fixtures: headless Debian Chromium (Playwright async API, in the test's own event loop)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, async_playwright

from tests.fakes.webapp import webapp
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, DOCS_SCREENSHOTS


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """A fresh Chromium per test (Playwright objects belong to one event loop, and each test has its own)."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup (it installs Debian's chromium)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """docs/screenshots/ with SCREENSHOTS=1 (refreshes the committed PNGs), else this test's tmp_path."""
    if os.environ.get("SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return tmp_path


@pytest.fixture
async def webapp_upstream() -> AsyncIterator[str]:
    """The example HTML application (tests/fakes/webapp.py) the browser tests sign in to."""
    server = TestServer(webapp(), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()
