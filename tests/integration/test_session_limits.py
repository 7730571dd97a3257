"""Session limits: idle timeout slides with bounded writes; the absolute lifetime does not slide."""

from __future__ import annotations

from typing import Any

from tests.integration.test_refresh import session_record
from tests.support.op import browser_login

API = {"Accept": "application/json"}
LIMITS = {"session": {"idle_timeout": "10m", "lifetime": "30m"}}


async def logged_in(gw: Any) -> Any:
    browser = gw.browser()
    assert (await browser_login(browser, f"{gw.url}/")).status == 200
    return browser


async def test_idle_timeout_ends_an_unused_session(gateway_factory: Any, clock: Any, redis_client: Any) -> None:
    gw = await gateway_factory(**LIMITS)
    async with await logged_in(gw) as browser:
        key = session_record(gw, browser, redis_client)["key"]
        clock.advance(9 * 60)
        assert (await browser.get(f"{gw.url}/a", headers=API)).status == 200
        clock.advance(10 * 60 + 1)  # ten idle minutes since the last request
        assert (await browser.get(f"{gw.url}/b", headers=API)).status == 401
        assert redis_client.get(key) is None


async def test_activity_slides_idle_with_at_most_one_write_a_minute(gateway_factory: Any, clock: Any,
                                                                    redis_client: Any) -> None:
    gw = await gateway_factory(**LIMITS)
    async with await logged_in(gw) as browser:
        first = session_record(gw, browser, redis_client)["last_seen"]
        clock.advance(30)
        assert (await browser.get(f"{gw.url}/a", headers=API)).status == 200
        assert session_record(gw, browser, redis_client)["last_seen"] == first  # no write within a minute
        for _ in range(3):  # 3 x 6 minutes: 18 minutes in all, never 10 idle
            clock.advance(6 * 60)
            assert (await browser.get(f"{gw.url}/a", headers=API)).status == 200
        record = session_record(gw, browser, redis_client)
        assert record["last_seen"] > first
        assert 0 < redis_client.pttl(record["key"]) <= 10 * 60 * 1000  # Redis TTL follows the idle deadline


async def test_absolute_lifetime_ends_even_an_active_session(gateway_factory: Any, clock: Any) -> None:
    gw = await gateway_factory(**LIMITS)
    async with await logged_in(gw) as browser:
        for _ in range(5):  # 5 x 5 minutes of activity
            clock.advance(5 * 60)
            assert (await browser.get(f"{gw.url}/a", headers=API)).status == 200
        clock.advance(5 * 60 + 1)  # 30 minutes since login
        assert (await browser.get(f"{gw.url}/a", headers=API)).status == 401
