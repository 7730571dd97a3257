"""The per-request metrics are plain numbers (observability._PlainFamily), not prometheus_client's
locked Counter and Histogram: a scrape must read exactly as it did with those (same families, samples,
labels, order and values), which these tests check against prometheus_client itself."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import metrics as prometheus_metrics

from gateway.errors import GatewayError, InvalidToken
from gateway.web.observability import _STORE_BUCKETS as STORE_BUCKETS
from gateway.web.observability import Metrics

# (route, status, seconds) for requests; (origin, status, seconds or None) for upstream requests.
# Durations on and around bucket bounds (a bound counts in its own bucket), above the last one, and 0.
REQUESTS = [("proxy", 200, 0.005), ("proxy", 200, 0.0051), ("proxy", 404, 0.0), ("healthz", 200, 0.3),
            ("proxy", 200, 12.0), ("callback", 302, 1.0), ("proxy", 502, 2.5), ("proxy", 200, 0.075)]
# Bearer tokens judged (BearerAuthenticator's on_judged), and the (outcome, reason) series they count in.
BEARER_ERRORS = [None, InvalidToken("token expired"), None, GatewayError(), InvalidToken("token expired")]
BEARER = [("valid", "none"), ("invalid", "token_expired"), ("valid", "none"), ("error", GatewayError.code),
          ("invalid", "token_expired")]
# (operation, seconds, failed) for session store calls.
STORE_CALLS = [("get", 0.0005, False), ("get", 0.0007, False), ("put", 0.003, True), ("get", 3.0, False)]
UPSTREAMS = [("http://127.0.0.1:80", "200", 0.01), ("http://127.0.0.1:80", "error", None),
             ("http://app:8080", "503", 7.5), ("http://127.0.0.1:80", "200", 0.0049),
             ("http://down:1", "error", None)]  # an origin that never answered: no latency series


def scrape(registry: CollectorRegistry) -> str:
    """The text exposition with the `_created` timestamps (creation times) blanked out."""
    return re.sub(r"^(\S+_created(?:\{[^}]*\})?) \S+$", r"\1 T", generate_latest(registry).decode(), flags=re.M)


def reference(requests: list[tuple[str, int, float]], upstreams: list[tuple[str, str, float | None]],
              store_calls: Sequence[tuple[str, float, bool]] = (), bearer: Sequence[tuple[str, str]] = ()) -> str:
    """What prometheus_client's own Counter and Histogram (the gateway's metrics before) write for the same."""
    registry = CollectorRegistry()
    counter = Counter("oidc_gateway_http_requests_total", "HTTP requests by route and status", ["route", "status"],
                      registry=registry)
    latency = Histogram("oidc_gateway_http_request_duration_seconds",
                        "Time from request to response (headers and streamed body) by route", ["route"],
                        registry=registry)
    Gauge("oidc_gateway_http_requests_in_flight", "Requests being handled now", registry=registry).set(0)
    up_latency = Histogram("oidc_gateway_upstream_request_duration_seconds",
                           "Time until an upstream's response headers, by upstream origin", ["upstream"],
                           registry=registry)
    up_counter = Counter("oidc_gateway_upstream_requests_total",
                         "Upstream requests by origin and status (error: no response)", ["upstream", "status"],
                         registry=registry)
    validations = Counter("oidc_gateway_bearer_validations_total",
                          "Bearer tokens checked, by outcome (valid | invalid | error) and reason",
                          ["outcome", "reason"], registry=registry)
    store_latency = Histogram("oidc_gateway_session_store_duration_seconds", "Session store calls by operation",
                              ["operation"], buckets=STORE_BUCKETS, registry=registry)
    store_errors = Counter("oidc_gateway_session_store_errors_total", "Failed session store calls by operation",
                           ["operation"], registry=registry)
    for operation, seconds, failed in store_calls:
        store_errors.labels(operation=operation)  # the wrapper makes both series on the first call
        store_latency.labels(operation=operation).observe(seconds)
        if failed:
            store_errors.labels(operation=operation).inc()
    for outcome, reason in bearer:
        validations.labels(outcome=outcome, reason=reason).inc()
    for route, status, seconds in requests:
        counter.labels(route, str(status)).inc()
        latency.labels(route).observe(seconds)
    for origin, status, up_seconds in upstreams:
        up_counter.labels(origin, status).inc()
        if up_seconds is not None:
            up_latency.labels(origin).observe(up_seconds)
    return scrape(registry)


class Store:
    """A store whose calls take the time set in `now` (perf_counter's fake) and fail when told to."""

    def __init__(self, now: list[float]) -> None:
        self.now = now
        self.next: tuple[float, bool] = (0.0, False)

    async def get(self) -> None:
        await self._call()

    async def put(self) -> None:
        await self._call()

    async def _call(self) -> None:
        seconds, failed = self.next
        self.now[0] += seconds
        if failed:
            raise ConnectionError("store down")


def gateway_metrics(requests: list[tuple[str, int, float]], upstreams: list[tuple[str, str, float | None]],
                    monkeypatch: pytest.MonkeyPatch, store_calls: Sequence[tuple[str, float, bool]] = (),
                    bearer_errors: Sequence[GatewayError | None] = ()) -> str:
    """The same events through Metrics; only the families the reference has are compared."""
    metrics = Metrics()
    real, now = time.perf_counter, [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    for error in bearer_errors:
        metrics.record_bearer(error)
    fake = Store(now)
    store = metrics.instrument_store(fake)  # type: ignore[arg-type]
    for operation, seconds, failed in store_calls:
        now[0], fake.next = 0.0, (seconds, failed)
        with contextlib.suppress(ConnectionError):
            asyncio.run(getattr(store, operation)())
    for route, status, seconds in requests:
        now[0] = seconds
        metrics.request_started()
        metrics.request_done(route, status, 0.0)
    monkeypatch.setattr(time, "perf_counter", real)
    for origin, status, up_seconds in upstreams:
        metrics.record_upstream(origin, status, up_seconds)
    text = scrape(metrics.registry)
    wanted = ("oidc_gateway_http_request", "oidc_gateway_upstream_request", "oidc_gateway_session_store",
              "oidc_gateway_bearer")
    return "".join(line + "\n" for line in text.splitlines()
                   if line.split(" ")[2 if line.startswith("#") else 0].startswith(wanted))


def test_a_scrape_reads_as_prometheus_clients_counter_and_histogram(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = reference(REQUESTS, UPSTREAMS, STORE_CALLS, BEARER)
    assert 'oidc_gateway_http_request_duration_seconds_bucket{le="0.005",route="proxy"} 2.0' in expected
    assert 'oidc_gateway_session_store_errors_total{operation="put"} 1.0' in expected
    assert 'oidc_gateway_bearer_validations_total{outcome="valid",reason="none"} 2.0' in expected
    assert gateway_metrics(REQUESTS, UPSTREAMS, monkeypatch, STORE_CALLS, BEARER_ERRORS) == expected


def test_before_any_request_the_families_are_there_without_series(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = reference([], [])
    assert "# TYPE oidc_gateway_http_requests_total counter" in expected
    assert gateway_metrics([], [], monkeypatch) == expected


def test_created_series_follow_prometheus_clients_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prometheus_metrics, "_use_created", False)
    expected = reference(REQUESTS, UPSTREAMS)
    assert "_created" not in expected
    assert gateway_metrics(REQUESTS, UPSTREAMS, monkeypatch) == expected


def test_created_is_when_the_series_first_appeared() -> None:
    before = time.time()
    metrics = Metrics()
    metrics.request_started()
    metrics.request_done("proxy", 200, time.perf_counter())
    text = generate_latest(metrics.registry).decode()
    created = float(re.search(r'^oidc_gateway_http_requests_created\{route="proxy",status="200"\} (\S+)$', text,
                              re.M).group(1))  # type: ignore[union-attr]
    assert before <= created <= time.time()


def test_two_registrations_of_a_name_are_refused() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("oidc_gateway_http_requests_total", "again", registry=metrics.registry)
