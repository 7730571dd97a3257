"""Records at rest: sessions and pending logins in Redis are AES-GCM encrypted, bound to their key,
readable after a secret rotation; pending logins are bounded per browser and globally."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.oidc.client import AuthRequest
from gateway.session.crypto import RecordCipher
from gateway.session.model import PendingLogin, Session
from gateway.session.redis import RedisStore
from gateway.session.store import MemoryStore, SessionStore
from tests.conftest import REDIS_URL, FakeClock
from tests.support.op import browser_login

SECRET_A = b"A" * 32
SECRET_B = b"B" * 32


def session(last_seen: float = 1.0) -> Session:
    return Session(sub="alice-sub", iss="http://op", created_at=1.0, last_seen=last_seen,
                   claims={"email": "alice@example.com"}, access_token="access-token-value",
                   refresh_token="refresh-token-value", id_token="id-token-value", op_sid="op-sid")


def pending(state: str, binding: str = "b" * 64) -> PendingLogin:
    return PendingLogin(request=AuthRequest(state=state, nonce="nonce-value", code_verifier="verifier-value",
                                            rd="/x"), binding=binding, created_at=1.0)


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


def store(raw: Redis, prefix: str, *secrets: bytes, **kwargs: Any) -> RedisStore:
    return RedisStore(raw, prefix=prefix, cipher=RecordCipher(list(secrets)), **kwargs)


async def test_a_redis_dump_shows_no_token_or_identity(raw: Redis, redis_prefix: str) -> None:
    s = store(raw, redis_prefix, SECRET_A)
    await s.put("sid", session(), ttl=60)
    await s.put_login("state-1", pending("state-1"), ttl=60)
    dump = b"".join([await raw.get(key) or b"" async for key in raw.scan_iter(match=f"{redis_prefix}*")
                     if await raw.type(key) == b"string"])
    assert dump
    for secret in (b"access-token-value", b"refresh-token-value", b"id-token-value", b"alice-sub",
                   b"alice@example.com", b"nonce-value", b"verifier-value"):
        assert secret not in dump
    assert await s.get("sid") == session()
    assert await s.take_login("state-1") == pending("state-1")


async def test_rotation_old_records_decrypt_new_ones_use_the_first_secret(raw: Redis, redis_prefix: str) -> None:
    await store(raw, redis_prefix, SECRET_A).put("sid", session(), ttl=60)
    rotated = store(raw, redis_prefix, SECRET_B, SECRET_A)
    assert await rotated.get("sid") == session()
    await rotated.put("sid2", session(), ttl=60)
    assert await store(raw, redis_prefix, SECRET_B).get("sid2") == session()
    assert await store(raw, redis_prefix, SECRET_A).get("sid2") is None  # written with B


async def test_a_record_moved_to_another_key_does_not_open(raw: Redis, redis_prefix: str,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    s = store(raw, redis_prefix, SECRET_A)
    await s.put("victim", session(), ttl=60)
    await raw.set(s._key("s", "attacker"), await raw.get(s._key("s", "victim")))
    with caplog.at_level(logging.WARNING, logger="gateway.session.redis"):
        assert await s.get("attacker") is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "access-token" not in caplog.text
    # A session record replayed as a login state does not open either.
    await raw.set(s._key("l", "st"), await raw.get(s._key("s", "victim")))
    assert await s.take_login("st") is None


async def test_a_tampered_byte_does_not_open(raw: Redis, redis_prefix: str) -> None:
    s = store(raw, redis_prefix, SECRET_A)
    await s.put("sid", session(), ttl=60)
    key = s._key("s", "sid")
    blob = bytearray(await raw.get(key))
    for index in (0, 5, len(blob) // 2, len(blob) - 1):
        changed = bytearray(blob)
        changed[index] ^= 0x01
        await raw.set(key, bytes(changed))
        assert await s.get("sid", cached=False) is None
    await raw.set(key, session().dumps())  # plaintext planted in Redis is no session
    assert await s.get("sid", cached=False) is None


async def test_unknown_secret_reads_as_no_session(raw: Redis, redis_prefix: str) -> None:
    await store(raw, redis_prefix, SECRET_A).put("sid", session(), ttl=60)
    assert await store(raw, redis_prefix, SECRET_B).get("sid") is None


async def test_encrypted_touch_is_compare_and_set(raw: Redis, redis_prefix: str) -> None:
    a, b = store(raw, redis_prefix, SECRET_A), store(raw, redis_prefix, SECRET_A)
    original = session()
    await a.put("sid", original, ttl=60)
    refreshed = dataclasses.replace(original, access_token="at-2")
    await b.put("sid", refreshed, ttl=60, create=False)
    assert await a.put("sid", dataclasses.replace(original, last_seen=9.0), ttl=60, create=False,
                       expect=original) is False
    assert (await a.get("sid", cached=False)).access_token == "at-2"
    assert await a.put("sid", dataclasses.replace(refreshed, last_seen=9.0), ttl=60, create=False,
                       expect=refreshed) is True
    assert (await b.get("sid", cached=False)).last_seen == 9.0


# --- pending logins bounded ------------------------------------------------------------------------

@pytest.fixture(params=["memory", "redis"])
def bounded(request: Any, raw: Redis, redis_prefix: str, clock: FakeClock) -> SessionStore:
    if request.param == "memory":
        return MemoryStore(clock, max_pending_logins=5, max_logins_per_browser=3)
    return store(raw, redis_prefix, SECRET_A, max_pending_logins=5, max_logins_per_browser=3)


async def test_pending_logins_per_browser_keep_only_the_newest(bounded: SessionStore) -> None:
    for i in range(5):
        await bounded.put_login(f"st{i}", pending(f"st{i}", binding="1" * 64), ttl=60)
    assert await bounded.take_login("st0") is None and await bounded.take_login("st1") is None
    for i in (2, 3, 4):
        assert await bounded.take_login(f"st{i}") == pending(f"st{i}", binding="1" * 64)


async def test_pending_logins_globally_keep_only_the_newest(bounded: SessionStore) -> None:
    for i in range(8):  # one browser each: the global cap applies
        await bounded.put_login(f"st{i}", pending(f"st{i}", binding=f"{i:064d}"), ttl=60)
    for i in range(3):
        assert await bounded.take_login(f"st{i}") is None
    for i in range(3, 8):
        assert await bounded.take_login(f"st{i}") is not None


async def test_a_login_flood_leaves_bounded_keys(raw: Redis, redis_prefix: str) -> None:
    s = store(raw, redis_prefix, SECRET_A, max_pending_logins=20)
    for i in range(200):
        await s.put_login(f"st{i}", pending(f"st{i}", binding=f"{i:064d}"), ttl=60)
    keys = [key async for key in raw.scan_iter(match=f"{redis_prefix}*", count=1000)]
    # 20 states, 20 per-browser sets, 1 global set: evicted logins leave nothing behind.
    assert len(keys) == 41
    assert await raw.zcard(f"{redis_prefix}lz") == 20


async def test_start_flood_through_the_gateway_is_bounded(gateway_factory: Any, redis_prefix: str,
                                                          raw: Redis) -> None:
    gw = await gateway_factory(session={"max_pending_logins": 15})
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as flood:
        for _ in range(40):  # no cookie kept: every hit is a new browser
            async with flood.get(f"{gw.url}/oauth2/start?rd=/x", allow_redirects=False) as resp:
                assert resp.status == 302
    assert await raw.zcard(f"{redis_prefix}lz") == 15
    async with gw.browser() as browser:  # one browser hammering start keeps at most 10
        for _ in range(15):
            await browser.get(f"{gw.url}/oauth2/start?rd=/x", allow_redirects=False)
        binding_sets = [key async for key in raw.scan_iter(match=f"{redis_prefix}lb:*")]
        assert max([await raw.zcard(key) for key in binding_sets]) == 10
        # And a login after the flood still completes.
        result = await browser_login(browser, f"{gw.url}/app")
        assert result.status == 200
