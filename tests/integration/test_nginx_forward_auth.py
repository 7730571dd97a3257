"""A real nginx (Debian's, started by the test) with auth_request to the gateway protects the echo upstream.

The nginx configuration is examples/nginx/forward-auth.conf, rendered with free loopback ports and
wrapped in a minimal nginx.conf (pid, logs and temp paths in the test's directory).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import free_port
from tests.integration.test_login import upstream_saw
from tests.support.op import browser_login

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "nginx" / "forward-auth.conf"
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (scripts/setup installs it)")

WRAPPER = """
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/site.conf;
}}
"""


async def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("nginx did not start listening")


@pytest.fixture
async def nginx_port(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    yield free_port(), tmp_path


async def start_nginx(port: int, directory: Path, gateway: str, upstream: str) -> subprocess.Popen[bytes]:
    site = EXAMPLE.read_text(encoding="utf-8")
    site = site.replace("@LISTEN@", f"127.0.0.1:{port}").replace("@GATEWAY@", gateway).replace("@UPSTREAM@", upstream)
    (directory / "site.conf").write_text(site, encoding="utf-8")
    (directory / "nginx.conf").write_text(WRAPPER.format(d=directory), encoding="utf-8")
    proc = subprocess.Popen(  # noqa: S603 - a fixed binary and arguments
        [str(NGINX), "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(directory / "nginx.conf"),
         "-g", "daemon off; master_process on;"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await _wait_for_port(port, proc, directory / "error.log")
    return proc


@pytest.fixture
async def protected(gateway_factory: Any, echo_upstream: str, nginx_port: tuple[int, Path]) -> AsyncIterator[str]:
    port, directory = nginx_port
    front = f"http://127.0.0.1:{port}"
    gw = await gateway_factory(
        public_url=front,
        access={"redirect_domains": ["127.0.0.1"],
                "rules": [{"path": "^/admin/", "allowed_groups": ["nobody-has-this"]},
                          {"path": "^/open/", "public": True}]})
    proc = await start_nginx(port, directory, gw.url.removeprefix("http://"), echo_upstream.removeprefix("http://"))
    try:
        yield front
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_unauthenticated_request_is_sent_to_the_login_with_the_original_url(protected: str) -> None:
    async with aiohttp.ClientSession() as http:
        resp = await http.get(f"{protected}/app/deep?x=1", allow_redirects=False, headers={"Accept": "text/html"})
        assert resp.status == 302
        assert resp.headers["Location"] == f"{protected}/oauth2/start?rd={protected}/app/deep?x=1"
        start = await http.get(resp.headers["Location"], allow_redirects=False)
        assert start.status == 302 and "/auth?" in start.headers["Location"]  # the gateway sends it to the OP
        public = await http.get(f"{protected}/open/x")
        assert public.status == 200
        assert "x-auth-request-user" not in upstream_saw(await public.text())["h"]
        direct = await http.get(f"{protected}/oauth2/auth")
        assert direct.status == 404  # the subrequest location is internal


async def test_session_reaches_upstream_with_identity_headers_and_the_absolute_return_url(protected: str) -> None:
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        result = await browser_login(browser, f"{protected}/app/deep?x=1")
        assert result.status == 200, result.body
        assert str(result.url) == f"{protected}/app/deep?x=1"  # back on the absolute URL via redirect_domains
        seen = upstream_saw(result.body)
        assert seen["path"] == "/app/deep"
        assert seen["h"]["x-auth-request-user"] == ["alice"]
        assert seen["h"]["x-auth-request-email"] == ["alice@example.com"]
        assert seen["h"]["x-auth-request-groups"] == ["admins,staff"]
        assert seen["h"]["authorization"][0].startswith("Bearer ")

        spoof = await browser.get(f"{protected}/app/x", headers={"X-Auth-Request-User": "mallory",
                                                                 "X-Auth-Request-Email": "m@evil.test"})
        h = upstream_saw(await spoof.text())["h"]
        assert h["x-auth-request-user"] == ["alice"] and h["x-auth-request-email"] == ["alice@example.com"]

        denied = await browser.get(f"{protected}/admin/x", headers={"Accept": "application/json"})
        assert denied.status == 403  # the per-route rule applied to the original URL
