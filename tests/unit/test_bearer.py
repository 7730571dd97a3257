"""BearerAuthenticator: verified tokens are cached by hash until exp, bounded; failures never cached."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from gateway.auth.bearer import BearerAuthenticator
from gateway.errors import InvalidToken
from gateway.oidc.verify import TokenVerifier
from tests.unit.test_verify import NOW, claims, make_verifier, sign


class CountingVerifier(TokenVerifier):
    """The real verifier, counting how often a signature is checked."""

    calls = 0

    async def bearer(self, raw: str) -> dict[str, Any]:
        type(self).calls += 1
        return await super().bearer(raw)


class Clock:
    now = NOW

    def __call__(self) -> float:
        return self.now


def make(cache_size: int = 100) -> tuple[BearerAuthenticator, Clock]:
    CountingVerifier.calls = 0
    clock = Clock()
    verifier = make_verifier(clock=clock, cls=CountingVerifier)
    return BearerAuthenticator(verifier, clock=clock, cache_size=cache_size), clock


def request(token: str) -> Any:
    return make_mocked_request("GET", "/", headers={"Authorization": f"Bearer {token}"})


def api_token(sub: str = "alice", exp: float = NOW + 300) -> str:
    return sign(claims(aud="api", nonce=None, sub=sub, exp=exp))


async def test_repeated_token_verified_once() -> None:
    auth, _ = make()
    token = api_token()
    first = await auth.authenticate(request(token))
    second = await auth.authenticate(request(token))
    assert first is not None and second is not None and second.sub == "alice"
    assert second.access_token == token and CountingVerifier.calls == 1


async def test_cached_token_expires_with_its_exp() -> None:
    auth, clock = make()
    token = api_token(exp=NOW + 100)
    await auth.authenticate(request(token))
    clock.now = NOW + 99
    await auth.authenticate(request(token))
    assert CountingVerifier.calls == 1
    clock.now = NOW + 100 + 61  # past exp and the verifier's skew: checked again, and refused
    with pytest.raises(InvalidToken):
        await auth.authenticate(request(token))
    assert CountingVerifier.calls == 2


async def test_cache_is_bounded_least_recently_used_first() -> None:
    auth, _ = make(cache_size=2)
    a, b, c = api_token("a"), api_token("b"), api_token("c")
    for token in (a, b, a, c):  # c evicts b (a was used more recently)
        await auth.authenticate(request(token))
    assert CountingVerifier.calls == 3
    await auth.authenticate(request(a))
    assert CountingVerifier.calls == 3
    await auth.authenticate(request(b))
    assert CountingVerifier.calls == 4


async def test_failures_are_not_cached() -> None:
    auth, _ = make()
    bad = sign(claims(aud="not-ours", nonce=None))
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await auth.authenticate(request(bad))
    assert CountingVerifier.calls == 2


async def test_no_bearer_is_not_mine() -> None:
    auth, _ = make()
    assert await auth.authenticate(make_mocked_request("GET", "/")) is None
    assert await auth.authenticate(make_mocked_request("GET", "/", headers={"Authorization": "Basic eDp5"})) is None
    with pytest.raises(InvalidToken):
        await auth.authenticate(request("opaque-token"))
