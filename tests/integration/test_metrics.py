"""GET /metrics against the real OP, Redis and the echo upstream: every metric the issue names moves."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from tests.conftest import free_port
from tests.integration.test_bearer import jwt_access_token
from tests.integration.test_refresh import expire_access_token, session_record
from tests.support.op import browser_login

API = {"Accept": "application/json"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(gw: Any) -> Samples:
    resp = await gw.client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(await resp.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_logins_refreshes_jwks_store_and_upstream_are_counted(
        gateway_factory: Any, op: Any, clock: Any, redis_client: Any, echo_upstream: str) -> None:
    gw = await gateway_factory("gateway-public", session={"idle_timeout": "8h"})
    resp = await gw.client.get("/oauth2/callback?state=unknown&code=x", headers=API)
    assert resp.status == 400
    browser = gw.browser()
    async with browser:
        assert (await browser_login(browser, f"{gw.url}/first")).status == 200
        expire_access_token(gw, clock, session_record(gw, browser, redis_client))
        assert (await browser.get(f"{gw.url}/after-expiry", headers=API)).status == 200
    samples = await scrape(gw)

    assert value(samples, "oidc_gateway_http_requests_total", route="callback", status="400") == 1
    assert value(samples, "oidc_gateway_http_requests_total", route="callback", status="302") == 1
    assert value(samples, "oidc_gateway_http_requests_total", route="proxy", status="302") == 1  # to the OP
    assert value(samples, "oidc_gateway_http_requests_total", route="proxy", status="200") == 2
    assert value(samples, "oidc_gateway_http_request_duration_seconds_count", route="proxy") == 3
    assert value(samples, "oidc_gateway_http_requests_in_flight") == 1  # this scrape
    assert value(samples, "oidc_gateway_logins_total", outcome="success", reason="none") == 1
    assert value(samples, "oidc_gateway_logins_total", outcome="failure", reason="unknown_state") == 1
    assert value(samples, "oidc_gateway_token_refreshes_total", outcome="success") == 1
    assert value(samples, "oidc_gateway_jwks_fetches_total", outcome="success") >= 1
    assert value(samples, "oidc_gateway_jwks_keys") >= 1
    for operation in ("get", "put", "put_login", "take_login"):
        assert value(samples, "oidc_gateway_session_store_duration_seconds_count", operation=operation) >= 1
    assert value(samples, "oidc_gateway_session_store_errors_total", operation="get") == 0
    assert value(samples, "oidc_gateway_upstream_requests_total", upstream=echo_upstream, status="200") == 2
    assert value(samples, "oidc_gateway_upstream_request_duration_seconds_count", upstream=echo_upstream) == 2
    assert value(samples, "oidc_gateway_build_info", version=__version__) == 1


async def test_bearer_outcomes_upstream_errors_and_store_errors_are_counted(
        gateway_factory: Any, op: Any) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    gw = await gateway_factory(access={"bearer": {"audiences": ["urn:gateway:api"]}})
    token = await jwt_access_token(op)
    assert (await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {token}"})).status == 200
    assert (await gw.client.get("/api", headers={**API, "Authorization": "Bearer not-a-jwt"})).status == 401
    assert (await gw.client.get("/api", headers={**API, "Authorization": "Bearer a.b.c"})).status == 401
    samples = await scrape(gw)
    assert value(samples, "oidc_gateway_bearer_validations_total", outcome="valid", reason="none") == 1
    assert value(samples, "oidc_gateway_bearer_validations_total", outcome="invalid", reason="not_a_jwt") == 1
    assert value(samples, "oidc_gateway_bearer_validations_total", outcome="invalid", reason="malformed_token") == 1

    broken = await gateway_factory(session={"redis_url": f"redis://127.0.0.1:{free_port()}/0"},
                                   upstreams=[{"path": "/", "url": down}], access={"public_paths": ["^/open"]})
    assert (await broken.client.get("/readyz")).status == 503
    assert (await broken.client.get("/open", headers=API)).status == 502
    samples = await scrape(broken)
    assert value(samples, "oidc_gateway_session_store_errors_total", operation="ping") >= 1
    assert value(samples, "oidc_gateway_session_store_duration_seconds_count", operation="ping") >= 1
    assert value(samples, "oidc_gateway_upstream_requests_total", upstream=down, status="error") == 1
    assert value(samples, "oidc_gateway_http_requests_total", route="readyz", status="503") == 1

