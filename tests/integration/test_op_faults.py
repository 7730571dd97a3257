"""The real OP (tests/op/server.js) stopped, restarted and rotating its signing keys under a running gateway.

Each test runs its own OP process (not the session-wide `op` fixture: these stop it) on a port that
stays the same across restarts, with its private keys in a file (OP_JWKS_FILE), so a restart keeps
the keys and a test can rotate them by rewriting the file. No mocks: the OP is killed or stopped for
real and the gateway sees refused connections. Waits are polls on a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families
from yarl import URL

from gateway.oidc.metadata import PROBE_INTERVAL
from tests.conftest import Gateway, deep_merge, free_port
from tests.integration.test_bearer import jwt_access_token
from tests.support.op import TestOP, browser_login

API = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
DEADLINE = 10.0  # seconds: every poll below gives up (and fails) after this


@dataclass
class ControlledOP(TestOP):
    """A TestOP that keeps its port and its keys (OP_JWKS_FILE) across stop/start, and can be killed."""

    __test__ = False

    jwks_file: Path = field(default_factory=Path)

    def _environment(self) -> dict[str, str]:
        return {**super()._environment(), "OP_JWKS_FILE": str(self.jwks_file)}

    def kill(self) -> None:
        """SIGKILL: the OP crashes, its connections are reset."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()
        self._proc = None
        self.stop()  # closes the log

    def pause(self, paused: bool = True) -> None:
        """SIGSTOP / SIGCONT: a hung OP; the kernel still accepts connections, nobody answers."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP if paused else signal.SIGCONT)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)  # a paused OP cannot act on SIGTERM
        super().stop()

    def hits(self, path: str) -> int:
        """Requests the OP has received for `path` (GET /__test/hits)."""
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(
                f"{self.issuer}/__test/hits", timeout=5) as resp:
            return int(json.load(resp).get(path, 0))

    def keys(self) -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = json.loads(self.jwks_file.read_text())["keys"]
        return keys

    def publish(self, keys: list[dict[str, Any]]) -> None:
        """The private keys the next start() uses; the first RS256 key signs, all are published."""
        self.jwks_file.write_text(json.dumps({"keys": keys}))


@pytest.fixture
def own_op(tmp_path: Path) -> Iterator[ControlledOP]:
    # Tokens live 4 h: the key-cache test moves the gateway's clock past the JWKS max age (1 h).
    server = ControlledOP(access_token_ttl=4 * 3600, id_token_ttl=4 * 3600, jwks_file=tmp_path / "op-jwks.json")
    server.port = free_port()
    yield server
    server.stop()


@pytest.fixture
def gateway_for(start_gateway: Callable[..., Awaitable[Gateway]],
                own_op: ControlledOP) -> Callable[..., Awaitable[Gateway]]:
    async def make(**overrides: Any) -> Gateway:
        base = {"oidc": {"issuer": own_op.issuer, "client_secret": own_op.clients["gateway"],
                         "discovery_retry_interval": "100ms"},
                "access": {"bearer": {"audiences": ["urn:gateway:api"]}}}
        return await start_gateway(**deep_merge(base, overrides))

    return make


@pytest.fixture
async def browsers() -> AsyncIterator[Callable[[], aiohttp.ClientSession]]:
    """Cookie-keeping client sessions, closed after the test whether it passed or not."""
    opened: list[aiohttp.ClientSession] = []

    def open_one() -> aiohttp.ClientSession:
        opened.append(aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
        return opened[-1]

    yield open_one
    for session in opened:
        await session.close()


async def poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float = DEADLINE) -> float:
    """Seconds until check() was true; fails after `timeout`."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < timeout, f"not within {timeout}s: {what}"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def logged_in(gw: Gateway, browser: aiohttp.ClientSession) -> aiohttp.ClientSession:
    result = await browser_login(browser, f"{gw.url}/before")
    assert result.status == 200, result.body[:300]
    return browser


async def status_of(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with http.get(url, headers=headers, allow_redirects=False) as resp:
        return resp.status, await resp.text()


def bearer(token: str) -> dict[str, str]:
    return {**API, "Authorization": f"Bearer {token}"}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def jwks_fetches(gw: Gateway) -> float:
    """Attempts so far (success + failure), from the gateway's /metrics."""
    text = await (await gw.client.get("/metrics")).text()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == "oidc_gateway_jwks_fetches_total")


# --- the OP stops under traffic, then comes back ---------------------------------------------------


async def test_op_down_sessions_and_bearer_go_on_logins_get_503_then_recover(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP,
        browsers: Callable[[], aiohttp.ClientSession]) -> None:
    own_op.start()
    gw = await gateway_for()
    browser = await logged_in(gw, browsers())
    leaving = await logged_in(gw, browsers())
    tokens = [await jwt_access_token(own_op) for _ in range(4)]  # presented only during the outage
    # A login whose user has signed in at the OP; the OP dies before the gateway redeems the code.
    halfway = browsers()
    stopped = await browser_login(halfway, f"{gw.url}/half", stop_at=lambda url: url.path == "/oauth2/callback")
    callback = stopped.url.join(URL(stopped.headers["Location"]))
    async with aiohttp.ClientSession() as http:
        assert (await status_of(http, f"{gw.url}/oauth2/start?rd=/a", API))[0] == 302

        own_op.kill()

        async def start_refused() -> bool:
            return (await status_of(http, f"{gw.url}/oauth2/start?rd=/a", API))[0] == 503

        noticed = await poll(start_refused, "/oauth2/start answers 503 once the OP is down")

        # Under traffic: sessions and Bearer JWTs (cached metadata and JWKS) next to refused logins.
        session_calls = [browser.get(f"{gw.url}/s{i}", headers=API) for i in range(20)]
        bearer_calls = [http.get(f"{gw.url}/api/{i}", headers=bearer(tokens[i % 4])) for i in range(20)]
        page_calls = [http.get(f"{gw.url}/app/{i}", headers=HTML, allow_redirects=False) for i in range(10)]
        start_calls = [http.get(f"{gw.url}/oauth2/start?rd=/b", headers=API, allow_redirects=False)
                       for _ in range(5)]
        answers = await asyncio.gather(*session_calls, *bearer_calls, *page_calls, *start_calls)
        bodies = [await resp.text() for resp in answers]
        statuses = [resp.status for resp in answers]
        assert statuses[:40] == [200] * 40, statuses
        for resp, body in zip(answers[40:50], bodies[40:50], strict=True):  # a browser: the page, no redirect
            assert resp.status == 503 and "Location" not in resp.headers
            assert resp.content_type == "text/html" and "provider_unavailable" in body
        for resp, body in zip(answers[50:], bodies[50:], strict=True):  # an API client: JSON
            assert resp.status == 503 and json.loads(body)["error"] == "provider_unavailable"
        # The code cannot be redeemed: a clear page, no session.
        async with halfway.get(callback, headers=HTML, allow_redirects=False) as resp:
            assert resp.status == 503 and "provider_unavailable" in await resp.text()
            assert "_oidc_gateway" not in resp.cookies
        # Sign-out ends the local session although the OP cannot be told, and lands on the gateway's
        # signed-out page, not on the dead OP's logout page.
        async with leaving.get(f"{gw.url}/oauth2/sign_out", headers=HTML, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"] == "/oauth2/signed_out"
        assert (await leaving.get(f"{gw.url}/left", headers=API)).status == 401
        # An API client without credentials is told to authenticate, as always (interface.md).
        assert (await status_of(http, f"{gw.url}/api/x", API))[0] == 401
        # The process is fine and stays in the load balancer: what it can serve, it serves.
        assert (await status_of(http, f"{gw.url}/healthz", API))[0] == 200
        assert (await status_of(http, f"{gw.url}/readyz", API))[0] == 200

        began = time.monotonic()
        await asyncio.to_thread(own_op.start)  # same port, same keys
        restart = time.monotonic() - began

        async def start_redirects() -> bool:
            return (await status_of(http, f"{gw.url}/oauth2/start?rd=/a", API))[0] == 302

        recovered = await poll(start_redirects, "/oauth2/start redirects again once the OP is back")
    # A new login completes without restarting the gateway; the old session never noticed.
    newcomer = browsers()
    result = await browser_login(newcomer, f"{gw.url}/after")
    assert result.status == 200 and json.loads(result.body)["path"] == "/after"
    assert (await browser.get(f"{gw.url}/still", headers=API)).status == 200
    print(f"\nOP down noticed after {noticed:.2f}s; OP restart {restart:.2f}s; logins back {recovered:.2f}s "
          "after the OP answered again")


async def test_hung_op_logins_refused_within_the_timeout_sessions_unaffected(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP,
        browsers: Callable[[], aiohttp.ClientSession]) -> None:
    own_op.start()
    gw = await gateway_for(oidc={"http_timeout": "1s"})
    browser = await logged_in(gw, browsers())
    tokens = [await jwt_access_token(own_op) for _ in range(5)]
    async with aiohttp.ClientSession() as http:
        own_op.pause()

        async def timed(call: Awaitable[aiohttp.ClientResponse]) -> tuple[int, float]:
            began = time.monotonic()
            async with await call as resp:
                await resp.read()
                return resp.status, time.monotonic() - began

        async def start_refused() -> bool:
            return (await status_of(http, f"{gw.url}/oauth2/start", API))[0] == 503

        noticed = await poll(start_refused, "/oauth2/start answers 503 while the OP hangs")
        answers = await asyncio.gather(
            *(timed(http.get(f"{gw.url}/oauth2/start", headers=HTML, allow_redirects=False)) for _ in range(10)),
            *(timed(browser.get(f"{gw.url}/s", headers=API)) for _ in range(10)),
            *(timed(http.get(f"{gw.url}/api", headers=bearer(token))) for token in tokens))
        starts, others = answers[:10], answers[10:]
        assert {status for status, _ in starts} == {503}
        assert max(took for _, took in starts) < 1 + 0.5  # one probe, bounded by http_timeout
        assert {status for status, _ in others} == {200}
        assert max(took for _, took in others) < 0.5  # nothing else waits for the OP
        print(f"\nhung OP noticed after {noticed:.2f}s; then login starts 503 in <= {max(t for _, t in starts):.2f}s, "
              f"sessions/Bearer 200 in <= {max(t for _, t in others):.3f}s")
        own_op.pause(False)

        async def start_redirects() -> bool:
            return (await status_of(http, f"{gw.url}/oauth2/start", API))[0] == 302

        await poll(start_redirects, "logins resume once the OP answers again")
    newcomer = browsers()
    assert (await browser_login(newcomer, f"{gw.url}/x")).status == 200


async def test_login_flood_probes_the_op_at_most_once_per_interval(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP) -> None:
    own_op.start()
    gw = await gateway_for()
    discovery = "/.well-known/openid-configuration"
    before = own_op.hits(discovery)
    began, sent = time.monotonic(), 0
    while time.monotonic() - began < 2.5 * PROBE_INTERVAL:  # waves of unauthenticated navigations
        answers = await asyncio.gather(*(gw.client.get(f"/app/{sent + i}", headers=HTML, allow_redirects=False)
                                         for i in range(20)))
        assert [a.status for a in answers] == [302] * 20
        sent += 20
    elapsed = time.monotonic() - began
    probes = own_op.hits(discovery) - before
    assert 1 <= probes <= 1 + elapsed / PROBE_INTERVAL < sent / 10, (probes, elapsed, sent)
    print(f"\n{sent} login starts in {elapsed:.2f}s: {probes} discovery probe(s) at the OP")


async def test_refresh_due_while_op_down_keeps_the_token_until_it_expires(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP,
        browsers: Callable[[], aiohttp.ClientSession], clock: Any) -> None:
    own_op.start()
    gw = await gateway_for(session={"idle_timeout": "8h"})  # the 4 h token ends before the session does
    browser = await logged_in(gw, browsers())
    own_op.kill()
    clock.advance(4 * 3600 - 30 + 1)  # inside refresh_before_expiry (30 s) of the 4 h access token
    resp = await browser.get(f"{gw.url}/due", headers=API)
    assert resp.status == 200
    token = dict(json.loads(await resp.text())["headers"])["Authorization"]
    resp = await browser.get(f"{gw.url}/due-again", headers=API)  # each request tries, none fails
    assert resp.status == 200 and dict(json.loads(await resp.text())["headers"])["Authorization"] == token
    clock.advance(30)  # expired now, and nobody can renew it
    gone = await browser.get(f"{gw.url}/expired", headers=API)
    assert gone.status == 503 and (await gone.json())["error"] == "provider_unavailable"


# --- the gateway starts while the OP is down -----------------------------------------------------


async def test_gateway_started_without_op_is_unready_then_ready_by_itself(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP,
        browsers: Callable[[], aiohttp.ClientSession]) -> None:
    gw = await gateway_for()  # nothing listens on the OP's port yet
    ready = await gw.client.get("/readyz")
    problems = (await ready.json())["problems"]
    assert ready.status == 503 and "ClientConnectorError" in problems["provider"], problems
    page = await gw.client.get("/app", headers=HTML, allow_redirects=False)
    assert page.status == 503 and "provider_unavailable" in await page.text()
    await asyncio.to_thread(own_op.start)

    async def is_ready() -> bool:
        return (await gw.client.get("/readyz")).status == 200

    took = await poll(is_ready, "/readyz turns 200 by itself once the OP is up")
    browser = browsers()
    assert (await browser_login(browser, f"{gw.url}/x")).status == 200
    print(f"\nready {took:.2f}s after the OP answered (discovery_retry_interval 100ms, doubling)")


async def test_first_login_after_the_op_returns_need_not_wait_for_the_retry_backoff(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP,
        browsers: Callable[[], aiohttp.ClientSession]) -> None:
    gw = await gateway_for(oidc={"discovery_retry_interval": "1h"})  # the background retry is far away
    assert (await gw.client.get("/readyz")).status == 503  # (this probe's verdict is reused for 1 s)
    await asyncio.to_thread(own_op.start)

    async def login_starts() -> bool:
        return (await gw.client.get("/oauth2/start", allow_redirects=False)).status == 302

    await poll(login_starts, "a login start loads the metadata once the OP is up")
    browser = browsers()
    result = await browser_login(browser, f"{gw.url}/x")  # the keys are fetched on the way
    assert result.status == 200, result.body[:300]
    assert (await gw.client.get("/readyz")).status == 200


async def test_readyz_loads_the_metadata_itself_after_a_start_up_outage(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP) -> None:
    """A Kubernetes pod gets no traffic while unready, so no login would load the metadata for it:
    the readiness probe does (at most once a second), not the background retry an hour away."""
    gw = await gateway_for(oidc={"discovery_retry_interval": "1h"})
    assert (await gw.client.get("/readyz")).status == 503
    await asyncio.to_thread(own_op.start)

    async def is_ready() -> bool:
        return (await gw.client.get("/readyz")).status == 200

    await poll(is_ready, "/readyz loads the metadata once the OP is up")


# --- the OP rotates its signing key --------------------------------------------------------------


def new_rs256_key(kid: str) -> dict[str, Any]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private))
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


async def restart_with(op: ControlledOP, keys: list[dict[str, Any]]) -> None:
    op.stop()
    op.publish(keys)
    await asyncio.to_thread(op.start)


async def test_key_rotation_one_refetch_old_key_honoured_while_published(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP,
        browsers: Callable[[], aiohttp.ClientSession], clock: Any) -> None:
    own_op.start()
    gw = await gateway_for()  # jwks_min_refresh_interval: 60 s (default)
    browser = await logged_in(gw, browsers())
    old_keys = own_op.keys()
    old_tokens = [await jwt_access_token(own_op) for _ in range(2)]
    assert {kid_of(t) for t in old_tokens} == {"rs256-1"}
    fetched = await jwks_fetches(gw)

    # Rotation: a new key signs, the old one is still published (the usual overlap).
    await restart_with(own_op, [new_rs256_key("rs256-2"), *old_keys])
    new_tokens = [await jwt_access_token(own_op) for _ in range(3)]
    assert {kid_of(t) for t in new_tokens} == {"rs256-2"}
    clock.advance(61)  # past the minimum re-fetch interval since the start-up fetch
    assert (await gw.client.get("/api/1", headers=bearer(new_tokens[0]))).status == 200
    assert await jwks_fetches(gw) == fetched + 1  # exactly one re-fetch for the new kid
    assert (await gw.client.get("/api/2", headers=bearer(new_tokens[1]))).status == 200
    assert (await gw.client.get("/api/3", headers=bearer(old_tokens[0]))).status == 200
    assert await jwks_fetches(gw) == fetched + 1  # neither the new nor the old key needs another
    # New logins get ID tokens signed with the new key; the session from before goes on.
    newcomer = browsers()
    assert (await browser_login(newcomer, f"{gw.url}/x")).status == 200
    assert (await browser.get(f"{gw.url}/y", headers=API)).status == 200
    assert await jwks_fetches(gw) == fetched + 1

    # Tokens signed by a key the OP never published, half with unknown kids, half with the current kid
    # (a bad signature under a known kid also earns a re-fetch): they cannot drive re-fetches.
    stranger = new_rs256_key("never-published")
    forged = [jwt.encode({"iss": own_op.issuer, "aud": "urn:gateway:api", "sub": "mallory",
                          "exp": int(clock()) + 600, "iat": int(clock())},
                         jwt.PyJWK(stranger).key, algorithm="RS256",
                         headers={"kid": f"forged-{i}" if i % 2 else "rs256-2"})
              for i in range(20)]
    answers = await asyncio.gather(*(gw.client.get("/api/f", headers=bearer(t)) for t in forged))
    assert [a.status for a in answers] == [401] * 20
    assert await jwks_fetches(gw) == fetched + 1  # re-fetched 0 s ago: none now
    clock.advance(61)
    answers = await asyncio.gather(*(gw.client.get("/api/f", headers=bearer(t)) for t in forged))
    assert [a.status for a in answers] == [401] * 20
    assert await jwks_fetches(gw) == fetched + 2  # at most one per interval, however many kids


async def test_withdrawn_key_stops_verifying_within_the_jwks_max_age(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP, clock: Any) -> None:
    own_op.start()
    gw = await gateway_for()
    old_keys = own_op.keys()
    old_tokens = [await jwt_access_token(own_op) for _ in range(3)]
    assert (await gw.client.get("/api/1", headers=bearer(old_tokens[0]))).status == 200
    # The OP withdraws the old key (say it leaked) and signs with a new one; no token with an unknown
    # kid need ever reach this gateway for it to notice.
    await restart_with(own_op, [new_rs256_key("rs256-2"), *(k for k in old_keys if k["kid"] != "rs256-1")])
    clock.advance(30 * 60)  # within the max age the cached set is trusted as it is
    assert (await gw.client.get("/api/2", headers=bearer(old_tokens[1]))).status == 200
    clock.advance(31 * 60)  # past the max age (1 h): the next use re-fetches
    refused = await gw.client.get("/api/3", headers=bearer(old_tokens[2]))
    assert refused.status == 401 and (await refused.json())["error"] == "invalid_token"
    assert (await gw.client.get("/api/4", headers=bearer(await jwt_access_token(own_op)))).status == 200


async def test_stale_key_set_is_kept_while_the_op_is_down(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP, clock: Any) -> None:
    own_op.start()
    gw = await gateway_for()
    tokens = [await jwt_access_token(own_op) for _ in range(2)]
    assert (await gw.client.get("/api/1", headers=bearer(tokens[0]))).status == 200
    own_op.kill()
    clock.advance(2 * 3600)  # the cached set is stale and cannot be re-fetched: it goes on serving
    assert (await gw.client.get("/api/2", headers=bearer(tokens[1]))).status == 200



async def test_op_restarted_with_new_keys_under_the_same_kid_recovers_after_one_refetch(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP,
        browsers: Callable[[], aiohttp.ClientSession], clock: Any) -> None:
    # What the test OP does without OP_JWKS_FILE, and many development OPs: fresh keys at every start,
    # always called "rs256-1". The kid is known, so only a failed signature can tell the key changed.
    own_op.start()
    gw = await gateway_for()
    old_token = await jwt_access_token(own_op)
    own_op.stop()
    own_op.jwks_file.unlink()
    await asyncio.to_thread(own_op.start)
    assert kid_of(await jwt_access_token(own_op)) == kid_of(old_token)
    fetched = await jwks_fetches(gw)
    clock.advance(61)  # past the minimum re-fetch interval
    browser = browsers()
    result = await browser_login(browser, f"{gw.url}/x")
    assert result.status == 200, result.body[:300]
    assert (await gw.client.get("/api/1", headers=bearer(await jwt_access_token(own_op)))).status == 200
    assert await jwks_fetches(gw) == fetched + 1
    refused = await gw.client.get("/api/2", headers=bearer(old_token))  # its key is gone from the OP
    assert refused.status == 401 and await jwks_fetches(gw) == fetched + 1  # and it cannot cause a fetch now


async def test_gateway_restarted_during_op_outage_serves_existing_sessions(
        gateway_for: Callable[..., Awaitable[Gateway]], own_op: ControlledOP,
        browsers: Callable[[], aiohttp.ClientSession]) -> None:
    # A replica (re)started while the OP is down: nothing cached in memory, the sessions are in Redis.
    own_op.start()
    first = await gateway_for()
    browser = await logged_in(first, browsers())
    token = await jwt_access_token(own_op)
    cookie = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
    own_op.kill()
    second = await gateway_for()  # same Redis prefix and cookie secret
    assert (await second.client.get("/readyz")).status == 503
    resp = await second.client.get("/x", headers={**API, "Cookie": f"_oidc_gateway={cookie}"})
    assert resp.status == 200
    # No keys were ever fetched: a Bearer JWT cannot be checked. That is our outage, not a bad token.
    resp = await second.client.get("/api", headers=bearer(token))
    assert resp.status == 503 and (await resp.json())["error"] == "provider_unavailable"


async def test_op_behind_a_proxy_answering_5xx_counts_as_down(fake_op_gateway: Any, fake_op: Any) -> None:
    # A load balancer in front of a dead OP connects fine and answers 502/503: that is down as well.
    gw = await fake_op_gateway(oidc={"scopes": ["openid", "email"]})
    fake_op.discovery_status = 503

    async def start_status(expected: int) -> bool:
        return (await gw.client.get("/oauth2/start", headers=API, allow_redirects=False)).status == expected

    await poll(lambda: start_status(503), "login starts refused while the OP's proxy answers 503")
    page = await gw.client.get("/app", headers=HTML, allow_redirects=False)
    assert page.status == 503 and "provider_unavailable" in await page.text()
    fake_op.discovery_status = 200
    await poll(lambda: start_status(302), "login starts resume")
