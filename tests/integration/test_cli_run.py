"""`python -m gateway --config` as a real process: serves, becomes ready, drains and exits 0 on SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.conftest import COOKIE_SECRET, free_port


def write_config(tmp_path: Path, op: Any, port: int, upstream_port: int) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
listen: "127.0.0.1:{port}"
public_url: "http://127.0.0.1:{port}"
oidc:
  issuer: "{op.issuer}"
  client_id: gateway
  client_secret: "{op.clients['gateway']}"
session:
  store: memory
  cookie_secret: "{COOKIE_SECRET}"
  cookie_secure: false
upstreams:
  - path: /
    url: "http://127.0.0.1:{upstream_port}"
""")
    return path


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until_serving(proc: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()
        try:
            if get(url)[0] == 200:
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the gateway did not start")


def test_run_serves_is_ready_and_exits_0_on_sigterm(tmp_path: Path, op: Any) -> None:
    port = free_port()
    config = write_config(tmp_path, op, port, free_port())
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until_serving(proc, f"http://127.0.0.1:{port}/healthz")
        assert get(f"http://127.0.0.1:{port}/readyz")[0] == 200
        status, body = get(f"http://127.0.0.1:{port}/api")
        assert status == 401 and b"unauthenticated" in body
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill() if proc.poll() is None else None
    assert proc.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr


def test_port_in_use_is_a_clean_error(tmp_path: Path, op: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, op, port, free_port())
        proc = subprocess.run([sys.executable, "-m", "gateway", "--config", str(config)],
                              capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in proc.stderr.decode()
    assert b"Traceback" not in proc.stderr
