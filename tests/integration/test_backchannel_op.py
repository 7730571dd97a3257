"""Back-channel logout from the real OP: signing out at the OP ends the gateway sessions it names.

The test OP (oidc-provider) sends a logout token to every client of the OP session whose
backchannel_logout_uri is set when the user confirms logout at its end_session_endpoint; with
backchannel_logout_session_required it puts `sid` in that client's ID tokens and logout tokens. The
gateway's own /oauth2/sign_out is never used here: only the OP's call can end the sessions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support.op import TestOP, browser_login
from tests.support.records import open_record

API = {"Accept": "application/json"}
Browser = aiohttp.ClientSession


@pytest.fixture
def backchannel_to(op: TestOP) -> Iterator[Callable[..., None]]:
    """Point a client's backchannel_logout_uri at a gateway; undone after the test (the OP is shared)."""
    touched: list[str] = []

    def point(gw: Any, client_id: str = "gateway", *, session_required: bool = True) -> None:
        touched.append(client_id)
        op.set_backchannel(client_id, f"{gw.url}/oauth2/backchannel_logout", session_required=session_required)

    yield point
    for client_id in touched:
        op.set_backchannel(client_id, None)


async def signed_in(gw: Any, user: str = "alice") -> Browser:
    """A browser with its own OP session, signed in to the gateway as `user`."""
    browser = gw.browser()
    result = await browser_login(browser, f"{gw.url}/", username=user, password=f"{user}-password")
    assert result.status == 200, result.body
    return browser


def session_record(gw: Any, browser: Browser, redis_client: Any) -> dict[str, Any] | None:
    cookie = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
    key = f"{gw.settings.session.key_prefix}s:{hashlib.sha256(cookie.rpartition('.')[0].encode()).hexdigest()}"
    raw = redis_client.get(key)
    return None if raw is None else open_record(gw.settings, key, raw)


async def sign_out_at_op(op: TestOP, browser: Browser) -> None:
    """The user signs out at the OP itself (not through the gateway) and confirms."""
    result = await browser_login(browser, f"{op.issuer}/session/end", logout=True)
    assert result.status == 200 and "You have been signed out" in result.body, result.body
    assert any(url.endswith("/session/end/confirm") for url in result.visited)


async def api_status(gw: Any, browser: Browser) -> int:
    async with browser.get(f"{gw.url}/api", headers=API) as resp:
        return resp.status


async def test_op_logout_ends_that_op_sessions_gateway_session_by_sid(
        gateway_factory: Any, op: TestOP, backchannel_to: Any, redis_client: Any) -> None:
    gw = await gateway_factory()
    backchannel_to(gw)
    first, second, bob = await signed_in(gw), await signed_in(gw), await signed_in(gw, "bob")
    async with first, second, bob:
        records = [session_record(gw, b, redis_client) for b in (first, second, bob)]
        sids = [r["op_sid"] for r in records if r is not None]
        assert len(set(sids)) == 3 and None not in sids  # three OP sessions, each sid in its ID token

        await sign_out_at_op(op, first)

        # The OP waits for the back-channel answer before it shows "signed out": nothing else
        # has touched the gateway since, so only the logout token can have removed the record.
        assert session_record(gw, first, redis_client) is None
        assert session_record(gw, second, redis_client) is not None
        assert session_record(gw, bob, redis_client) is not None
        assert await api_status(gw, first) == 401
        assert await api_status(gw, second) == 200  # alice's other OP session lives on
        assert await api_status(gw, bob) == 200


async def test_op_logout_without_sid_ends_every_session_of_the_subject(
        gateway_factory: Any, op: TestOP, backchannel_to: Any, redis_client: Any) -> None:
    # HS256 logout tokens (signed with the client secret), and no sid anywhere: the sub decides.
    gw = await gateway_factory("gateway-hs", oidc={"id_token_signing_algs": ["HS256"]})
    backchannel_to(gw, "gateway-hs", session_required=False)
    first, second, bob = await signed_in(gw), await signed_in(gw), await signed_in(gw, "bob")
    async with first, second, bob:
        assert all(session_record(gw, b, redis_client)["op_sid"] is None  # type: ignore[index]
                   for b in (first, second, bob))

        await sign_out_at_op(op, first)

        assert session_record(gw, first, redis_client) is None
        assert session_record(gw, second, redis_client) is None
        assert session_record(gw, bob, redis_client) is not None
        assert [await api_status(gw, b) for b in (first, second, bob)] == [401, 401, 200]


async def test_without_a_backchannel_uri_op_logout_leaves_the_gateway_session(
        gateway_factory: Any, op: TestOP, redis_client: Any) -> None:
    """The control for the tests above: the session outlives the OP session unless the OP calls us."""
    gw = await gateway_factory()
    async with await signed_in(gw) as browser:
        assert session_record(gw, browser, redis_client)["op_sid"] is None  # type: ignore[index]
        await sign_out_at_op(op, browser)
        assert session_record(gw, browser, redis_client) is not None
        assert await api_status(gw, browser) == 200
