"""No token, code, secret or cookie value is ever logged: a full login, refresh and sign-out through
the real OP with every logger at DEBUG, then a search of the raw records and of the formatted lines
for the actual values. Also: the access log's structured fields and the request id in every line.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from gateway.app import create_app
from gateway.config import Settings
from gateway.web.logs import ContextFilter, JSONFormatter, LogfmtFormatter, TextFormatter
from gateway.web.observability import AccessLogger
from tests.conftest import COOKIE_SECRET, Gateway, GatewayServer, free_port
from tests.integration.test_refresh import expire_access_token, session_record
from tests.support.op import browser_login

API = {"Accept": "application/json"}


class Capture(logging.Handler):
    """Keeps the raw records: what the code handed to logging, before any formatter or redaction."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def raw_text(self) -> str:
        parts = []
        for record in self.records:
            parts.append(record.getMessage())
            parts.append(repr(record.args))
            parts.append(repr({k: v for k, v in record.__dict__.items() if k not in ("args", "msg")}))
            if record.exc_info:
                parts.append(logging.Formatter().formatException(record.exc_info))
        return "\n".join(parts)


@pytest.fixture
def captured() -> Iterator[tuple[Capture, dict[str, io.StringIO]]]:
    root = logging.getLogger()
    level = root.level
    capture = Capture()
    streams = {name: io.StringIO() for name in ("json", "logfmt", "text")}
    handlers: list[logging.Handler] = [capture]
    for name, formatter in (("json", JSONFormatter()), ("logfmt", LogfmtFormatter()), ("text", TextFormatter())):
        handler = logging.StreamHandler(streams[name])
        handler.setFormatter(formatter)
        handler.addFilter(ContextFilter())
        handlers.append(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield capture, streams
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


class AccessLoggedServer(GatewayServer):
    """Serves with run_gateway's access logger (aiohttp's default would log the query string)."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return await super()._make_runner(**kwargs, access_log_class=AccessLogger,
                                          access_log=logging.getLogger("gateway.access"))


@pytest.fixture
async def access_logged_gateway(settings_factory: Callable[..., Settings], op: Any, echo_upstream: str,
                                clock: Any) -> AsyncIterator[Any]:
    """A gateway served with the production access logger (run_gateway's), for the confidential client."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = settings_factory(listen=f"127.0.0.1:{port}", public_url=url, log_level="debug",
                                oidc={"issuer": op.issuer, "client_id": "gateway",
                                      "client_secret": op.clients["gateway"]},
                                session={"idle_timeout": "8h"}, upstreams=[{"path": "/", "url": echo_upstream}])
    server = AccessLoggedServer(create_app(settings, clock=clock), host="127.0.0.1", port=port)
    client = TestClient(server)
    await client.start_server()
    yield Gateway(client=client, url=url, settings=settings)
    await client.close()


def cookie_recorder(values: set[str]) -> aiohttp.TraceConfig:
    """Every cookie value the gateway sets, as the browser receives it."""
    trace = aiohttp.TraceConfig()

    async def on_end(session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams) -> None:
        for header in params.response.headers.getall("Set-Cookie", []):
            value = header.split(";", 1)[0].partition("=")[2]
            if len(value) >= 16:
                values.add(value)

    trace.on_request_end.append(on_end)
    return trace


async def test_no_token_code_secret_or_cookie_value_is_ever_logged(
        access_logged_gateway: Any, captured: tuple[Capture, dict[str, io.StringIO]], clock: Any,
        redis_client: Any, op: Any) -> None:
    gw = access_logged_gateway
    capture, streams = captured
    cookies: set[str] = set()
    secrets: set[str] = {op.clients["gateway"], COOKIE_SECRET, "alice-password"}
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), trace_configs=[cookie_recorder(cookies)])
    async with browser:
        result = await browser_login(browser, f"{gw.url}/private?q=1", headers={"X-Request-Id": "login-req-1"})
        assert result.status == 200, result.body
        callback = next(URL(u) for u in result.visited if URL(u).path == "/oauth2/callback")
        secrets |= {callback.query["code"], callback.query["state"]}
        first = session_record(gw, browser, redis_client)
        secrets |= {first[k] for k in ("access_token", "refresh_token", "id_token") if first.get(k)}
        session_cookie = next(c.value for c in browser.cookie_jar if c.key == "_oidc_gateway")
        secrets |= {session_cookie, session_cookie.rpartition(".")[0]}

        expire_access_token(gw, clock, first)  # a refresh grant, then the renewed tokens
        assert (await browser.get(f"{gw.url}/after-refresh", headers=API)).status == 200
        second = session_record(gw, browser, redis_client)
        assert second["access_token"] != first["access_token"]
        secrets |= {second[k] for k in ("access_token", "refresh_token", "id_token") if second.get(k)}

        # Credentials sent where they are refused: a replayed code, an opaque token as Bearer.
        replay = await gw.client.get(f"/oauth2/callback?code={callback.query['code']}&state={callback.query['state']}",
                                     headers=API)
        assert replay.status == 400
        refused = await gw.client.get("/api", headers={**API, "Authorization": f"Bearer {second['access_token']}"})
        assert refused.status == 401

        signed_out = await browser.get(f"{gw.url}/oauth2/sign_out", allow_redirects=False)
        assert signed_out.status == 302 and "id_token_hint=" in signed_out.headers["Location"]
    secrets |= cookies
    secrets.discard("")
    assert len(secrets) >= 10

    raw = capture.raw_text()
    outputs = {name: stream.getvalue() for name, stream in streams.items()}
    for secret in secrets:
        assert secret not in raw, f"a secret reached a log record: {secret[:6]}…"
        for name, text in outputs.items():
            assert secret not in text, f"a secret reached the {name} log: {secret[:6]}…"

    # Not vacuous: the flow was logged, at DEBUG, with access lines and request ids.
    entries = [json.loads(line) for line in outputs["json"].splitlines()]
    access = [e for e in entries if e["logger"] == "gateway.access"]
    callback_lines = [e for e in access if e["path"] == "/oauth2/callback"]
    assert callback_lines and all("?" not in e["message"] for e in access)
    assert {e.get("route") for e in access} >= {"proxy", "callback", "sign_out"}
    assert all(e.get("request_id") for e in access)
    assert any(e["request_id"] == "login-req-1" for e in access)
    assert any(e["message"] == "login succeeded" and e.get("sub") == "alice" and e.get("request_id")
               for e in entries)
    assert any(e.get("sub") == "alice" and e["path"] == "/after-refresh" for e in access)
    assert "login succeeded" in outputs["logfmt"] and "login succeeded" in outputs["text"]
