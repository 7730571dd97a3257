"""`workers: N` as real processes: `python -m gateway` with workers: 2, the real OP and the real Redis.

Which process owns a socket is read from /proc (Linux): the listening sockets of the port, and the
server side of one client connection (local = the gateway's port, remote = the client's port), so a
test knows which worker answered a request without the gateway exposing anything for it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from gateway.web.workers import STOP_MARGIN
from tests.conftest import COOKIE_SECRET, REDIS_URL, free_port
from tests.support.op import browser_login
from tests.support.redis_servers import wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc to map sockets")

SHUTDOWN_TIMEOUT = 2.0
STOP_BOUND = SHUTDOWN_TIMEOUT + STOP_MARGIN + 3.0  # the parent's own bound, plus interpreter exit


# --- /proc: who owns which socket ----------------------------------------------------------------


def _tcp_sockets(port: int) -> list[tuple[str, int, int]]:
    """(state, remote port, inode) of every IPv4 socket whose local address is 127.0.0.1:port."""
    local = f"0100007F:{port:04X}"
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            found.append((fields[3], int(fields[2].rpartition(":")[2], 16), int(fields[9])))
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:  # gone, or not ours to read
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie has exited: only its parent has not collected it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def listeners(port: int, candidates: set[int]) -> set[int]:
    """The candidate processes holding a listening socket on 127.0.0.1:port."""
    listening = {inode for state, _, inode in _tcp_sockets(port) if state == "0A"}
    return {pid for pid in candidates if _socket_inodes(pid) & listening}


def server_side_owner(port: int, client_port: int, candidates: set[int]) -> int:
    """The process that accepted the connection coming from client_port."""
    inodes = {inode for state, remote, inode in _tcp_sockets(port) if state == "01" and remote == client_port}
    owners = [pid for pid in candidates if _socket_inodes(pid) & inodes]
    assert len(owners) == 1, (owners, inodes)
    return owners[0]


# --- the gateway under test ----------------------------------------------------------------------


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    workers: set[int]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def write_config(tmp_path: Path, op: Any, port: int, prefix: str, workers: int = 2) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
listen: "127.0.0.1:{port}"
public_url: "http://127.0.0.1:{port}"
workers: {workers}
shutdown_timeout: {SHUTDOWN_TIMEOUT}s
oidc:
  issuer: "{op.issuer}"
  client_id: gateway
  client_secret: "{op.clients['gateway']}"
session:
  store: redis
  redis_url: "{REDIS_URL}"
  key_prefix: "{prefix}"
  cookie_secret: "{COOKIE_SECRET}"
  cookie_secure: false
upstreams:
  - path: /
    url: "http://127.0.0.1:{free_port()}"
""")
    return path


@pytest.fixture
def gateway(tmp_path: Path, op: Any, redis_prefix: str) -> Iterator[Running]:
    """`python -m gateway` with workers: 2, returned once both workers listen (and so are started up)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(write_config(tmp_path, op, port,
                                                                                          redis_prefix))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    running = Running(proc, port, set())

    def both_listen() -> bool:
        assert proc.poll() is None, proc.communicate()[1].decode()
        running.workers = listeners(port, children(proc.pid))
        return len(running.workers) == 2

    try:
        wait_for(both_listen, "two workers listening", timeout=30)
        yield running
    finally:
        for pid in [proc.pid, *running.workers]:  # the workers too: they hold the output pipes open
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


def get(url: str, path: str, headers: dict[str, str]) -> tuple[int, bytes, int, http.client.HTTPConnection]:
    """GET on a fresh connection: (status, body, the client's port, the connection, still open)."""
    parsed = URL(url)
    conn = http.client.HTTPConnection(parsed.host or "", parsed.port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, body, conn.sock.getsockname()[1], conn
    except BaseException:
        conn.close()
        raise


# --- tests ---------------------------------------------------------------------------------------


async def test_two_workers_share_the_port_and_the_session_then_stop_on_sigterm(gateway: Running) -> None:
    assert gateway.proc.pid not in listeners(gateway.port, {gateway.proc.pid})  # the parent only supervises
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        result = await browser_login(browser, f"{gateway.url}/", stop_at=lambda u: u.path == "/")
        assert result.status == 302 and result.url.path == "/oauth2/callback"
        cookies = browser.cookie_jar.filter_cookies(URL(gateway.url))
    cookie = "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())

    # The same cookie on fresh connections until each worker has answered it: the kernel picks the
    # worker per connection, and the session lives in Redis, not in the worker that created it.
    answered: set[int] = set()
    for _ in range(200):
        status, body, client_port, conn = get(gateway.url, "/oauth2/userinfo", {"Cookie": cookie})
        try:
            assert status == 200, body
            assert json.loads(body)["sub"] == "alice"
            answered.add(server_side_owner(gateway.port, client_port, gateway.workers))
        finally:
            conn.close()
        if answered == gateway.workers:
            break
    assert answered == gateway.workers

    gateway.proc.send_signal(signal.SIGTERM)
    _, stderr = gateway.proc.communicate(timeout=STOP_BOUND)
    assert gateway.proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    assert not any(alive(pid) for pid in gateway.workers)


async def test_a_worker_that_dies_stops_the_others_and_exits_1(gateway: Running) -> None:
    victim, survivor = sorted(gateway.workers)
    os.kill(victim, signal.SIGKILL)
    _, stderr = gateway.proc.communicate(timeout=STOP_BOUND)
    assert gateway.proc.returncode == 1
    assert f"(pid {victim}) was killed by SIGKILL unexpectedly" in stderr.decode()
    assert b"Traceback" not in stderr
    assert not alive(survivor)


async def test_workers_stop_by_themselves_when_the_parent_is_killed(gateway: Running) -> None:
    gateway.proc.kill()
    gateway.proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in gateway.workers), "orphaned workers exiting", timeout=STOP_BOUND)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", gateway.port), timeout=1).close()


def test_port_in_use_is_a_clean_error_with_workers(tmp_path: Path, op: Any, redis_prefix: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, op, port, redis_prefix)
        proc = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config)],
                              capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert f"oidc-gateway: cannot serve on 127.0.0.1:{port}: Address already in use" in proc.stderr.decode()
    assert b"Traceback" not in proc.stderr


def test_a_second_gateway_cannot_join_a_running_one(gateway: Running, tmp_path: Path, op: Any,
                                                    redis_prefix: str) -> None:
    """SO_REUSEPORT would let a second gateway share the port silently: the parent's probe refuses."""
    other = tmp_path / "other"
    other.mkdir()
    proc = subprocess.run([sys.executable, "-m", "gateway", "--config",
                           str(write_config(other, op, gateway.port, redis_prefix))], capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert f"oidc-gateway: cannot serve on 127.0.0.1:{gateway.port}" in proc.stderr.decode()
    assert listeners(gateway.port, children(gateway.proc.pid)) == gateway.workers
