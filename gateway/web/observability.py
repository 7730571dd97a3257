"""Metrics (a per-app prometheus CollectorRegistry) and the structured access logger.

Metric names follow the Prometheus conventions (`oidc_gateway_` prefix, base units, `_total` for
counters, `_seconds` for durations); every label has a small, fixed set of values: route names,
upstream origins from the config, outcomes and reasons chosen here (never a path, user or token).

The access log records method, path without the query string (codes, states and tokens travel in
queries), status, size, duration, route, the request id and the authenticated `sub`: never headers,
cookies or bodies.
"""

from __future__ import annotations

import inspect
import logging
import re
import time
import types
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any, cast

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gateway import __version__
from gateway.auth.identity import IDENTITY
from gateway.errors import GatewayError, InvalidToken
from gateway.oidc.jwks import KeySet
from gateway.proxy.headers import REQUEST_ID
from gateway.session.store import SessionStore
from gateway.web.logs import ACCESS_LINE, TEXT_FORMAT, access_fields, configure_logging, emit_access

__all__ = ["LOG_FORMAT", "AccessLogger", "Metrics", "configure_logging"]

LOG_FORMAT = TEXT_FORMAT  # kept for importers from before gateway.web.logs

_STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SLUG = re.compile(r"[a-z][a-z0-9_]{0,39}")
# LoginError details are fixed phrases (gateway.auth.flow); the metric gets a fixed reason for each.
_LOGIN_REASONS = (
    ("has no state", "missing_state"),
    ("unknown, expired or was already used", "unknown_state"),
    ("another browser", "browser_mismatch"),
    ("unexpected identity provider", "issuer_mismatch"),
    ("cancelled or access was denied", "access_denied"),
    ("answered with the error", "op_error"),
    ("did not accept the login", "token_exchange_failed"),
    ("could not be verified", "invalid_id_token"),
    ("no id token", "incomplete_response"),
    ("no authorization code", "incomplete_response"),
    ("malformed", "malformed_response"),
)


def login_reason(reason: str) -> str:
    """A bounded metric label for a login failure: a known slug, or the slug of a known phrase, or other."""
    if _SLUG.fullmatch(reason):
        return reason
    lowered = reason.lower()
    return next((slug for phrase, slug in _LOGIN_REASONS if phrase in lowered), "other")


def _slug(text: str) -> str:
    """`token expired` → `token_expired`: InvalidToken details are fixed phrases in gateway.oidc.verify."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "other"


class _KeySetCollector(Collector):
    """JWKS fetches and cached keys, read from the running KeySet at scrape time (oidc never sees web)."""

    def __init__(self) -> None:
        self.keys: KeySet | None = None

    def collect(self) -> Iterator[Metric]:
        fetches = CounterMetricFamily("oidc_gateway_jwks_fetches", "JWKS fetches from the OP by outcome",
                                      labels=["outcome"])
        cached = GaugeMetricFamily("oidc_gateway_jwks_keys", "Signing keys in the JWKS cache")
        if self.keys is not None:
            fetches.add_metric(["success"], self.keys.fetches - self.keys.failures)
            fetches.add_metric(["failure"], self.keys.failures)
            cached.add_metric([], self.keys.key_count)
        yield fetches
        yield cached


def _created_series() -> bool:
    """Whether prometheus_client writes `_created` series (PROMETHEUS_DISABLE_CREATED_SERIES, or
    disable_created_metrics()): the plain families below follow its Counter and Histogram there too."""
    return bool(getattr(prometheus_metrics, "_use_created", True))


class _PlainFamily(Collector):
    """A labelled counter or histogram for the per-request metrics, kept as plain floats.

    prometheus_client's Counter.inc and Histogram.observe take a lock for every number they change
    and walk the buckets in Python; 2-4 of them per request were about 7% of a proxied request's
    instructions. The event loop is the only writer here (no threads), so each series is a list
    the caller changes in place: `[value, created]` for a counter; for a histogram one count per
    bucket (not cumulative), then the sum, then `created`. Scrapes see exactly the samples (names,
    labels, order, values) prometheus_client's Counter or Histogram would have written.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], registry: CollectorRegistry,
                 buckets: tuple[float, ...] | None = None) -> None:
        self._name = name.removesuffix("_total") if buckets is None else name
        self._documentation = documentation
        self._labelnames = labelnames
        self.histogram = buckets is not None
        self.bounds: tuple[float, ...] = () if buckets is None else (*buckets, float("inf"))
        self._series: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def series(self, *labels: str) -> list[float]:
        """The live numbers of one label set (created on first use, as Counter.labels() would)."""
        found = self._series.get(labels)
        if found is None:
            zeros = len(self.bounds) + 2 if self.histogram else 2
            found = self._series[labels] = [0.0] * zeros
            found[-1] = time.time()
        return found

    def observe(self, series: list[float], seconds: float) -> None:
        """One observation into this histogram's `series`: its bucket (the first bound >= seconds, as
        Histogram.observe) and its sum."""
        series[bisect_left(self.bounds, seconds)] += 1
        series[-2] += seconds

    def describe(self) -> Iterator[Metric]:
        yield self._family()

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        created = _created_series()
        for labels, numbers in list(self._series.items()):
            base = dict(zip(self._labelnames, labels, strict=True))
            if not self.histogram:
                family.add_sample(f"{self._name}_total", base, numbers[0])
            else:
                total = 0.0
                for bound, count in zip(self.bounds, numbers, strict=False):
                    total += count
                    family.add_sample(f"{self._name}_bucket", {**base, "le": floatToGoString(bound)}, total)
                family.add_sample(f"{self._name}_count", base, total)
                family.add_sample(f"{self._name}_sum", base, numbers[-2])
            if created:
                family.add_sample(f"{self._name}_created", base, numbers[-1])
        yield family

    def _family(self) -> Metric:
        return Metric(self._name, self._documentation, "histogram" if self.histogram else "counter")


class Metrics:
    def __init__(self) -> None:
        self._bearer_valid: list[float] | None = None
        # (route, status) -> its request counter, its route's latency histogram (plain lists, see _PlainFamily)
        self._pairs: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
        # (origin, status) -> its upstream request counter and, unless "error", the origin's latency histogram
        self._upstream_pairs: dict[tuple[str, str], tuple[list[float], list[float] | None]] = {}
        self.registry = registry = CollectorRegistry()
        self.requests = _PlainFamily("oidc_gateway_http_requests_total", "HTTP requests by route and status",
                                     ("route", "status"), registry)
        self.latency = _PlainFamily("oidc_gateway_http_request_duration_seconds",
                                    "Time from request to response (headers and streamed body) by route",
                                    ("route",), registry, buckets=Histogram.DEFAULT_BUCKETS[:-1])
        self.in_flight = Gauge("oidc_gateway_http_requests_in_flight", "Requests being handled now",
                               registry=registry)
        # Read at scrape time from a plain counter: no lock taken twice per request.
        self._in_flight = 0
        self.in_flight.set_function(lambda: self._in_flight)
        self.upstream_latency = _PlainFamily("oidc_gateway_upstream_request_duration_seconds",
                                             "Time until an upstream's response headers, by upstream origin",
                                             ("upstream",), registry, buckets=Histogram.DEFAULT_BUCKETS[:-1])
        self.upstream_requests = _PlainFamily("oidc_gateway_upstream_requests_total",
                                              "Upstream requests by origin and status (error: no response)",
                                              ("upstream", "status"), registry)
        self.logins = Counter("oidc_gateway_logins_total", "Completed login callbacks by outcome and reason",
                              ["outcome", "reason"], registry=registry)
        self.refreshes = Counter("oidc_gateway_token_refreshes_total", "Refresh grants by outcome",
                                 ["outcome"], registry=registry)
        self.bearer = _PlainFamily("oidc_gateway_bearer_validations_total",  # counted per request (cache hits)
                                   "Bearer tokens checked, by outcome (valid | invalid | error) and reason",
                                   ("outcome", "reason"), registry)
        self.store_latency = _PlainFamily("oidc_gateway_session_store_duration_seconds",
                                          "Session store calls by operation", ("operation",), registry,
                                          buckets=_STORE_BUCKETS)
        self.store_errors = _PlainFamily("oidc_gateway_session_store_errors_total",
                                         "Failed session store calls by operation", ("operation",), registry)
        self.backchannel_logouts = Counter("oidc_gateway_backchannel_logouts_total",
                                           "Back-channel logout requests by outcome (success | rejected)",
                                           ["outcome"], registry=registry)
        self.backchannel_sessions = Counter("oidc_gateway_backchannel_logout_sessions_total",
                                            "Sessions ended by back-channel logout", registry=registry)
        self.reloads = Counter("oidc_gateway_config_reloads_total", "SIGHUP configuration reloads by outcome",
                               ["outcome"], registry=registry)
        self.reloaded_at = Gauge("oidc_gateway_config_last_reload_success_timestamp_seconds",
                                 "When the running configuration was loaded (start or SIGHUP)", registry=registry)
        self.reloaded_at.set_to_current_time()
        Gauge("oidc_gateway_build_info", "The running version", ["version"],
              registry=registry).labels(version=__version__).set(1)
        self._keys = _KeySetCollector()
        registry.register(self._keys)

    # --- callbacks handed to the lower layers by gateway.app ---------------------------------------

    def record_backchannel_logout(self, outcome: str, sessions: int) -> None:
        self.backchannel_logouts.labels(outcome=outcome).inc()
        self.backchannel_sessions.inc(sessions)

    def record_refresh(self, outcome: str) -> None:
        self.refreshes.labels(outcome=outcome).inc()

    def record_login(self, outcome: str, reason: str) -> None:
        self.logins.labels(outcome=outcome, reason=login_reason(reason) if outcome != "success" else "none").inc()

    def record_reload(self, ok: bool) -> None:
        self.reloads.labels(outcome="success" if ok else "failure").inc()
        if ok:
            self.reloaded_at.set_to_current_time()

    def watch_keys(self, keys: KeySet) -> None:
        """Expose this KeySet's fetch counters and cache size."""
        self._keys.keys = keys

    # --- wrappers ------------------------------------------------------------------------------------

    def instrument_store(self, store: SessionStore) -> SessionStore:
        """The same store, each coroutine call timed and its failures counted by operation."""
        return cast(SessionStore, _InstrumentedStore(store, self.store_latency, self.store_errors))

    def record_bearer(self, error: GatewayError | None) -> None:
        """One Bearer token judged (BearerAuthenticator's on_judged): None = valid, else what was raised."""
        if error is None:
            if self._bearer_valid is None:  # looked up on first use: no series before that
                self._bearer_valid = self.bearer.series("valid", "none")
            self._bearer_valid[0] += 1
        elif isinstance(error, InvalidToken):
            self.bearer.series("invalid", _slug(error.detail))[0] += 1
        else:  # e.g. the OP's keys could not be loaded
            self.bearer.series("error", error.code)[0] += 1

    def upstream_trace(self) -> aiohttp.TraceConfig:
        """Client tracing for the upstream ClientSession: latency to response headers, status, errors."""
        trace = aiohttp.TraceConfig()

        async def start(_: aiohttp.ClientSession, ctx: types.SimpleNamespace, __: Any) -> None:
            ctx.started = time.perf_counter()

        async def end(_: aiohttp.ClientSession, ctx: types.SimpleNamespace, params: aiohttp.TraceRequestEndParams,
                      ) -> None:
            self._upstream_done(ctx, params.url, str(params.response.status))

        async def failed(_: aiohttp.ClientSession, ctx: types.SimpleNamespace,
                         params: aiohttp.TraceRequestExceptionParams) -> None:
            self._upstream_done(ctx, params.url, "error")

        trace.on_request_start.append(start)
        trace.on_request_end.append(end)
        trace.on_request_exception.append(failed)
        return trace

    def _upstream_done(self, ctx: types.SimpleNamespace, url: Any, status: str) -> None:
        self.record_upstream(f"{url.scheme}://{url.host}:{url.port}", status,
                             None if status == "error" else time.perf_counter() - ctx.started)

    def record_upstream(self, origin: str, status: str, seconds: float | None) -> None:
        """One upstream request (the Forwarder's on_upstream): status or "error", time to its headers."""
        pair = self._upstream_pairs.get((origin, status))
        if pair is None:
            pair = self._upstream_pairs[(origin, status)] = (self.upstream_requests.series(origin, status),
                                                             self.upstream_latency.series(origin)
                                                             if status != "error" else None)
        pair[0][0] += 1
        if seconds is not None and pair[1] is not None:  # no latency series for an upstream that never answered
            self.upstream_latency.observe(pair[1], seconds)

    def request_started(self) -> None:
        self._in_flight += 1

    def request_done(self, route: str, status: int, started: float) -> None:
        """A request left the handler (`started`: its perf_counter() at the start) with `status`."""
        seconds = time.perf_counter() - started
        self._in_flight -= 1
        pair = self._pairs.get((route, status))
        if pair is None:
            pair = self._pairs[(route, status)] = (self.requests.series(route, str(status)),
                                                   self.latency.series(route))
        pair[0][0] += 1
        self.latency.observe(pair[1], seconds)


class _InstrumentedStore:
    """Delegates every attribute to the wrapped store; coroutine methods are timed (and failures counted)."""

    def __init__(self, store: SessionStore, latency: _PlainFamily, errors: _PlainFamily) -> None:
        self._store = store
        self._latency = latency
        self._errors = errors

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not inspect.iscoroutinefunction(target):
            return target
        histogram = self._latency
        latency, errors = histogram.series(name), self._errors.series(name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await target(*args, **kwargs)
            except Exception:
                errors[0] += 1
                raise
            finally:
                histogram.observe(latency, time.perf_counter() - started)

        self.__dict__[name] = timed  # found directly from now on: __getattr__ runs once per method
        return timed


class AccessLogger(AbstractAccessLogger):
    """One record per request on `gateway.access`: a readable message plus structured fields."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, duration: float) -> None:
        remote, method, path, status, size = (request.remote, request.method, request.path, response.status,
                                              response.body_length)
        match_info = getattr(request, "match_info", None)
        route = match_info.route.name if match_info is not None else None
        identity = request.get(IDENTITY)
        sub = identity.sub if identity is not None else None
        request_id, ms = request.get(REQUEST_ID), duration * 1000
        # The usual set-up (configure_logging's one handler): the line is written directly, formatted and
        # redacted exactly as that handler would; any other set-up gets an ordinary log record.
        if not emit_access(self.logger, remote, method, path, status, size, ms, route, request_id, sub):
            self.logger.info(ACCESS_LINE, remote, method, path, status, size, ms,
                             extra=access_fields(remote, method, path, status, size, ms, route, request_id, sub))

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
