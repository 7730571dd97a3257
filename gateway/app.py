"""create_app(settings): the only place that constructs objects and wires them together.

Long-lived resources are opened and closed by one cleanup_ctx generator each: the OP HTTP client,
the upstream HTTP client (pooled keep-alive), the session store (Redis pool), and the provider
metadata (+ JWKS warm-up, with a background retry task while the OP is unreachable). The request
path: one middleware (request id → error pages → metrics → AuthGate, proxy route only) → handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.auth.assertion import IdentityAssertion
from gateway.auth.backchannel import BackchannelLogout
from gateway.auth.bearer import BearerAuthenticator
from gateway.auth.cookie_session import SessionAuthenticator
from gateway.auth.flow import SIGNED_OUT_PATH, LoginFlow
from gateway.auth.middleware import PROXY_ROUTE, Authenticator, AuthGate, auth_middleware
from gateway.auth.policy import AccessPolicy
from gateway.auth.preserve import PostPreserver
from gateway.auth.refresh import Refresher
from gateway.config import Settings
from gateway.errors import NotFound
from gateway.oidc.client import OIDCClient
from gateway.oidc.jwks import KeySet
from gateway.oidc.metadata import ProviderState
from gateway.oidc.verify import BearerIssuer, TokenVerifier
from gateway.proxy.forward import Forwarder, expect_later, upstream_client_session
from gateway.proxy.headers import IdentityHeaders
from gateway.proxy.routes import UpstreamTable
from gateway.proxy.upstream import LeanClient
from gateway.session.connect import redis_client
from gateway.session.cookie import SignedCookie, derive_key
from gateway.session.crypto import RecordCipher
from gateway.session.redis import RedisStore
from gateway.session.store import MemoryStore, SessionStore
from gateway.web.errors import gateway_middleware
from gateway.web.observability import AccessLogger, Metrics, configure_logging
from gateway.web.ops import OpsHandlers
from gateway.web.pages import SECURITY_HEADERS, Pages
from gateway.web.reload import LiveConfig, reload_config
from gateway.web.server import serve
from gateway.web.workers import check_bindable, stop_gracefully_once, supervise

__all__ = ["COMPONENTS", "SERVER_OPTIONS", "SETTINGS", "Components", "create_app", "run_gateway", "server_options"]

log = logging.getLogger(__name__)

Clock = Callable[[], float]

# How the server must run: request bodies reach the forwarder exactly as sent (a gzip body is
# forwarded still gzipped, with its own Content-Encoding and Content-Length).
SERVER_OPTIONS: dict[str, Any] = {"auto_decompress": False}


def server_options(settings: Settings) -> dict[str, Any]:
    """SERVER_OPTIONS plus the header limits: a longer request target or header field is refused (414 or
    431, gateway.web.server) before any handler runs."""
    return {**SERVER_OPTIONS, "max_line_size": settings.max_header_size, "max_field_size": settings.max_header_size}


@dataclass(slots=True)
class Components:
    """Everything a request needs, built once at start-up."""

    provider: ProviderState
    keys: KeySet
    store: SessionStore
    flow: LoginFlow
    backchannel: BackchannelLogout
    forwarder: Forwarder
    ops: OpsHandlers
    auth: AuthGate


SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", Metrics)
OP_HTTP = web.AppKey("op_http", aiohttp.ClientSession)
UPSTREAM_HTTP = web.AppKey("upstream_http", aiohttp.ClientSession)
UPSTREAM_LEAN = web.AppKey("upstream_lean", LeanClient)  # bodiless requests to plain-http upstreams
STORE = web.AppKey("store", SessionStore)  # type: ignore[type-abstract]
PROVIDER = web.AppKey("provider", ProviderState)
KEYS = web.AppKey("keys", KeySet)
COMPONENTS = web.AppKey("components", Components)
LIVE = web.AppKey("live", LiveConfig)  # the settings in force after SIGHUP reloads, and how to apply new ones
PAGES = web.AppKey("pages", Pages)
ASSERTION = web.AppKey("assertion", IdentityAssertion)  # set only when identity_assertion is enabled


async def _op_http(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=app[SETTINGS].oidc.http_timeout)
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                     headers={"User-Agent": "oidc-gateway"}) as http:
        app[OP_HTTP] = http
        yield


async def _upstream_http(app: web.Application) -> AsyncIterator[None]:
    http = upstream_client_session()  # timed by the Forwarder (on_upstream), not by trace hooks
    app[UPSTREAM_HTTP] = http
    app[UPSTREAM_LEAN] = lean = LeanClient()
    yield
    await lean.close()
    await http.close()


async def _store(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].session
    if settings.store == "memory":
        app[STORE] = MemoryStore(app[CLOCK], max_pending_logins=settings.max_pending_logins)
        yield
        return
    # Records at rest are encrypted (gateway.session.crypto); without own secrets, keyed from cookie_secret.
    secrets = settings.encryption_secrets or [settings.cookie_secret]
    cipher = RecordCipher([secret.get_secret_value().encode() for secret in secrets])
    async with redis_client(settings) as redis:  # one node, Sentinel or Cluster (gateway.session.connect)
        store = RedisStore(redis, prefix=settings.key_prefix, cache_ttl=settings.local_cache_ttl, cipher=cipher,
                           max_pending_logins=settings.max_pending_logins, timeout=settings.redis_timeout)
        app[STORE] = store
        try:
            await store.ping()
        except Exception:  # noqa: BLE001 - logged by the store; the gateway starts and /readyz says unready
            log.error("session store unreachable at start-up; /readyz reports unready until it answers")
        listener = asyncio.create_task(store.listen())  # keeps the local session cache coherent
        yield
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


async def _provider(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    provider = ProviderState(app[OP_HTTP], settings.oidc)
    keys = KeySet(app[OP_HTTP], lambda: provider.metadata.jwks_uri if provider.metadata else None,
                  min_refresh_interval=settings.oidc.jwks_min_refresh_interval, clock=app[CLOCK])
    app[PROVIDER], app[KEYS] = provider, keys
    app[METRICS].watch_keys(keys)

    async def load_keys() -> None:
        if provider.require().jwks_uri is not None:
            await keys.refresh(force=True)

    async def retry_until_loaded() -> None:
        await provider.run()
        await load_keys()

    # One bounded attempt before serving; while the OP is wrong or down, retry in the background.
    task: asyncio.Task[None] | None = None
    if await provider.load_once():
        await load_keys()
    else:
        task = asyncio.create_task(retry_until_loaded())
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _trusted_issuers(app: web.Application) -> list[BearerIssuer]:
    """access.bearer.trusted_issuers: each with its own KeySet (fetched on first use, then cached)."""
    oidc = app[SETTINGS].oidc
    return [BearerIssuer(trusted.issuer,
                         KeySet(app[OP_HTTP], lambda uri=trusted.jwks_uri: uri,  # type: ignore[misc]
                                min_refresh_interval=oidc.jwks_min_refresh_interval, clock=app[CLOCK]),
                         frozenset(trusted.algorithms), frozenset(trusted.audiences))
            for trusted in app[SETTINGS].access.bearer.trusted_issuers]


async def _components(app: web.Application) -> AsyncIterator[None]:
    settings, clock, provider, keys = app[SETTINGS], app[CLOCK], app[PROVIDER], app[KEYS]
    store = app[METRICS].instrument_store(app[STORE])
    secret = settings.session.cookie_secret.get_secret_value().encode()
    session_cookie = SignedCookie(settings.session.cookie_name, derive_key(secret, "session-cookie"),
                                  secure=settings.session.cookie_secure, max_age=settings.session.lifetime,
                                  domain=settings.session.cookie_domain)
    form_post = settings.oidc.response_mode == "form_post"
    # form_post callbacks are cross-site POSTs: a Lax cookie would not come along (RFC 6265bis §5.4.7).
    login_samesite = ("None" if settings.session.cookie_secure else None) if form_post else "Lax"
    login_cookie = SignedCookie(f"{settings.session.cookie_name}_login", derive_key(secret, "login-binding"),
                                secure=settings.session.cookie_secure, max_age=settings.session.login_timeout,
                                path="/oauth2", domain=settings.session.cookie_domain,
                                samesite=login_samesite)  # type: ignore[arg-type]
    verifier = TokenVerifier(
        issuer=settings.oidc.issuer, client_id=settings.oidc.client_id,
        client_secret=settings.oidc.client_secret.get_secret_value() if settings.oidc.client_secret else None,
        id_token_algs=settings.oidc.id_token_signing_algs, bearer_algs=settings.access.bearer.algorithms,
        bearer_audiences=settings.bearer_audiences, keys=keys, clock_skew=settings.oidc.clock_skew, clock=clock,
        trusted_issuers=_trusted_issuers(app), accept_id_tokens=settings.access.bearer.accept_id_tokens)
    client = OIDCClient(settings.oidc, provider, verifier, app[OP_HTTP], redirect_uri=settings.redirect_uri,
                        clock=clock)
    lifetime, idle = settings.session.lifetime, settings.session.idle_timeout
    refresher = Refresher(client, store, refresh_before_expiry=settings.session.refresh_before_expiry,
                          ttl_of=lambda session, now: session.ttl(now, lifetime=lifetime, idle_timeout=idle),
                          clock=clock, wait_timeout=settings.oidc.http_timeout,
                          on_refresh=app[METRICS].record_refresh)
    sessions = SessionAuthenticator(store, session_cookie, settings.session, clock=clock, refresher=refresher)
    # A live session wins: a browser's own Authorization header is then replaced, never trusted.
    authenticators: list[Authenticator] = [sessions]
    if settings.access.bearer.enabled:
        bearer = settings.access.bearer
        authenticators.append(BearerAuthenticator(
            verifier, clock=clock, introspect=client.introspect if bearer.introspection else None,
            negative_ttl=bearer.introspection_negative_ttl, cache_size=bearer.introspection_cache_size,
            on_judged=app[METRICS].record_bearer))
    flow = LoginFlow(settings, client, store, sessions, session_cookie, login_cookie, clock=clock,
                     on_login=app[METRICS].record_login, replay_post=app[PAGES].replay_post)
    backchannel = BackchannelLogout(verifier, store, clock=clock, on_logout=app[METRICS].record_backchannel_logout)

    def routing(current: Settings) -> tuple[Forwarder, OpsHandlers, AuthGate]:
        """What a SIGHUP reload replaces: upstreams, access rules and the handlers that apply them."""
        policy = AccessPolicy(current.access)
        mapping = IdentityHeaders(current.headers)
        routes = UpstreamTable(current.upstreams)
        preserver = PostPreserver(public_url=current.public_url, limit_for=routes.preserve_post_limit)
        forwarder = Forwarder(routes, app[UPSTREAM_HTTP],
                              cookie_names=frozenset({session_cookie.name, login_cookie.name}),
                              forwarded_proto=current.public_url.partition(":")[0],
                              max_body_size=current.max_body_size, identity_headers=mapping,
                              assertion=app.get(ASSERTION), on_upstream=app[METRICS].record_upstream,
                              lean=app[UPSTREAM_LEAN])
        ops = OpsHandlers(provider, store, app[METRICS], authenticators, policy, mapping, assertion=app.get(ASSERTION))
        return forwarder, ops, auth_middleware(authenticators, policy, flow.begin, preserver)

    def rebuild(current: Settings) -> None:
        components = app[COMPONENTS]
        # One synchronous step: in-flight requests keep the objects they hold, the next ones get these.
        components.forwarder, components.ops, components.auth = routing(current)

    forwarder, ops, auth = routing(app[LIVE].settings)
    app[COMPONENTS] = Components(provider=provider, keys=keys, store=store, flow=flow, backchannel=backchannel,
                                 forwarder=forwarder, ops=ops, auth=auth)
    app[LIVE].rebuild = rebuild
    yield


async def _reload_on_sighup(app: web.Application) -> AsyncIterator[None]:
    """SIGHUP re-reads the configuration file (gateway.web.reload); only when started from one."""
    if app[LIVE].path is None:
        yield
        return
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, reload_config, app[LIVE], app[METRICS])
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked until now by _serve or the parent
    yield
    loop.remove_signal_handler(signal.SIGHUP)


def _delegate(pick: Callable[[Components], Handler]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await pick(request.app[COMPONENTS])(request)

    return handler


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer of the gateway's own (pages, JSON, redirects, aiohttp's 404/405/413) gets the anti-framing,
    no-sniff, referrer and CSP headers; a page that set its own (the replay page's nonce CSP) keeps it.
    Proxied responses are the upstream's: left alone."""
    if request.match_info.route.name == PROXY_ROUTE:  # errors there are rendered with them (web.errors)
        return
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise NotFound()  # /oauth2/ is the gateway's own namespace: never proxied


def create_app(settings: Settings, *, clock: Clock = time.time, config_path: Path | None = None) -> web.Application:
    metrics = Metrics()
    # client_max_size bounds only what the gateway's own handlers read (a form_post callback);
    # proxied bodies are streamed and bounded by max_body_size in the forwarder.
    pages = Pages(settings.pages_dir)  # templates are read once, here
    # One middleware layer: request id, error pages, metrics and the proxy route's AuthGate (the one in
    # force: a SIGHUP reload replaces it), folded together (gateway.web.errors.gateway_middleware).
    middleware = gateway_middleware(pages, metrics, lambda request: request.app[COMPONENTS].auth)
    app = web.Application(middlewares=[middleware], client_max_size=64 * 1024)
    app[SETTINGS], app[CLOCK], app[METRICS], app[PAGES] = settings, clock, metrics, pages
    app.on_response_prepare.append(_security_headers)
    app[LIVE] = LiveConfig(settings, config_path)
    if settings.identity_assertion.enabled:
        app[ASSERTION] = IdentityAssertion(settings.identity_assertion, issuer=settings.public_url, clock=clock)
    app.cleanup_ctx.extend([_op_http, _upstream_http, _store, _provider, _components, _reload_on_sighup])
    router = app.router
    router.add_get("/healthz", _delegate(lambda c: c.ops.healthz), name="healthz")
    router.add_get("/readyz", _delegate(lambda c: c.ops.readyz), name="readyz")
    router.add_get("/metrics", _delegate(lambda c: c.ops.metrics), name="metrics")
    router.add_get("/oauth2/start", _delegate(lambda c: c.flow.start), name="start")
    router.add_route("GET", "/oauth2/callback", _delegate(lambda c: c.flow.callback), name="callback")
    router.add_route("POST", "/oauth2/callback", _delegate(lambda c: c.flow.callback), name="callback_post")
    router.add_route("GET", "/oauth2/sign_out", _delegate(lambda c: c.flow.sign_out), name="sign_out")
    router.add_route("POST", "/oauth2/sign_out", _delegate(lambda c: c.flow.sign_out), name="sign_out_post")
    router.add_get(SIGNED_OUT_PATH, pages.signed_out, name="signed_out")
    router.add_post("/oauth2/backchannel_logout", _delegate(lambda c: c.backchannel.handle),
                    name="backchannel_logout")
    router.add_get("/oauth2/userinfo", _delegate(lambda c: c.ops.userinfo), name="userinfo")
    router.add_get("/oauth2/auth", _delegate(lambda c: c.ops.forward_auth), name="auth")
    # Envoy's HTTP ext_authz appends the original path (and keeps the method): /oauth2/auth/app/x.
    router.add_route("*", "/oauth2/auth/{tail:[\\s\\S]*}", _delegate(lambda c: c.ops.forward_auth),
                     name="auth_envoy")
    router.add_route("*", "/oauth2/{tail:[\\s\\S]*}", _not_found, name="oauth2_unknown")
    if ASSERTION in app:  # the gateway's own: never proxied while assertions are on
        router.add_get("/.well-known/jwks.json", app[ASSERTION].jwks, name="assertion_jwks")
    router.add_route("*", "/{tail:[\\s\\S]*}", _delegate(lambda c: c.forwarder), name=PROXY_ROUTE,
                     expect_handler=expect_later)
    return app


def _serve(settings: Settings, *, worker: bool = False, config_path: Path | None = None) -> None:
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is optional on exotic platforms
        loop = asyncio.new_event_loop()
    if worker:
        stop_gracefully_once(loop)
    if config_path is not None:  # a SIGHUP before the app's handler is installed waits for it (pending)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
    serve(create_app(settings, config_path=config_path), loop=loop, host=settings.listen_host,
          port=settings.listen_port, reuse_port=worker or None, header_timeout=settings.header_timeout,
          shutdown_timeout=settings.shutdown_timeout, handle_signals=not worker, access_log_class=AccessLogger,
          access_log=logging.getLogger("gateway.access"), **server_options(settings))


def _serve_worker(job: tuple[Settings, Path | None]) -> None:
    """The body of each worker process (spawned, so it sets up its own logging)."""
    settings, config_path = job
    configure_logging(settings.log_level, settings.log_format)
    try:
        _serve(settings, worker=True, config_path=config_path)
    except OSError as exc:
        log.error("cannot serve on %s: %s", settings.listen, exc.strerror or exc)
        raise SystemExit(1) from None


def run_gateway(settings: Settings, *, config_path: Path | None = None) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests get `shutdown_timeout` to finish.

    SIGHUP re-reads `config_path` and applies its routes, access rules and upstreams without
    dropping a connection (gateway.web.reload); with workers, the parent passes it on to each.

    With `workers` > 1 this process only supervises that many worker processes, each serving the
    listen address with SO_REUSEPORT (gateway.web.workers); OSError when the address is taken.
    """
    if settings.workers == 1:
        _serve(settings, config_path=config_path)
        return
    check_bindable(settings.listen_host, settings.listen_port)
    supervise(settings.workers, _serve_worker, (settings, config_path), shutdown_timeout=settings.shutdown_timeout)
