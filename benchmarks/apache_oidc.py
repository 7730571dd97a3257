"""Apache httpd + mod_auth_openidc as a benchmark contestant (used by benchmarks/run.py).

Debian's apache2-bin and libapache2-mod-auth-openidc (benchmarks/run installs them when it may).
One Apache of our own per variant: `apache2 -D FOREGROUND` with benchmarks/apache/mod_auth_openidc.conf,
its values from the environment, its pid file, logs and mutexes in a directory of its own, on a free
loopback port. It signs in at the test OP as the client `gateway` (the OP takes any loopback
redirect URI ending in /oauth2/callback), with its sessions in shared memory or, with `redis=True`, in
Redis (mod_auth_openidc's own key names, hashed with a passphrase new each run, each with a TTL;
`logout` deletes the session's). /bearer/ validates the same JWT access tokens as the gateway.
"""

from __future__ import annotations

import ctypes
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp
import jwt
from cryptography.hazmat.primitives import serialization
from yarl import URL

from tests.support.op import TestOP, browser_login  # run.py has put the repository on sys.path

__all__ = ["COOKIE", "MODULES", "error_lines", "logout", "missing", "preexec", "session_cookie", "start_argv",
           "wait_ready"]

CONFIG = Path(__file__).resolve().parent / "apache" / "mod_auth_openidc.conf"
MODULES = Path(os.environ.get("APACHE_MODULES", "/usr/lib/apache2/modules"))
NEEDED = ("mod_mpm_event.so", "mod_authn_core.so", "mod_authz_core.so", "mod_authz_user.so", "mod_headers.so",
          "mod_proxy.so", "mod_proxy_http.so", "mod_auth_openidc.so")
COOKIE = "mod_auth_openidc_session"
PR_SET_PDEATHSIG = 1


def _apache2() -> str | None:
    return shutil.which("apache2", path=os.environ.get("PATH", "") + os.pathsep + "/usr/sbin")


def missing() -> str | None:
    """Why Apache with mod_auth_openidc cannot run here, or None when it can."""
    if _apache2() is None:
        return "apache2 is not installed"
    absent = [name for name in NEEDED if not (MODULES / name).is_file()]
    return f"{', '.join(absent)} not in {MODULES}" if absent else None


def _rs256_key_file(op: TestOP, directory: Path) -> str:
    """The OP's RS256 signing key as a PEM public key, as OIDCOAuthVerifyCertFiles wants it: `kid#path`.
    (OIDCOAuthVerifyJwksUri would fetch the JWKS but accepts https URLs only; the test OP is http.)"""
    with urllib.request.urlopen(f"{op.issuer}/jwks", timeout=5) as resp:  # noqa: S310 - loopback
        keys = json.load(resp)["keys"]
    jwk = next(k for k in keys if k.get("alg") == "RS256" and k.get("use", "sig") == "sig")
    public = jwt.algorithms.RSAAlgorithm.from_jwk(jwk)
    pem = public.public_bytes(serialization.Encoding.PEM,  # type: ignore[union-attr]
                              serialization.PublicFormat.SubjectPublicKeyInfo)
    path = directory / "op-rs256.pem"
    path.write_bytes(pem)
    return f"{jwk['kid']}#{path}"


def _run_as() -> tuple[str, str]:
    """Who Apache's children run as: www-data when we are root (Apache refuses root), else ourselves."""
    if os.geteuid() == 0:
        for name in ("www-data", "nobody"):
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            return name, f"#{entry.pw_gid}"
    entry = pwd.getpwuid(os.geteuid())
    return entry.pw_name, f"#{entry.pw_gid}"


def start_argv(directory: Path, *, port: int, op: TestOP, upstream: str, redis: str | None) -> tuple[
        list[str], dict[str, str]]:
    """argv and environment for one Apache in the foreground; `directory` is its own (created here)."""
    directory.mkdir(mode=0o755)
    directory.parent.chmod(0o711)  # the children (www-data) must reach their directory, not list ours
    user, group = _run_as()
    env = {
        "BENCH_DIR": str(directory), "BENCH_MODULES": str(MODULES), "BENCH_PORT": str(port),
        "BENCH_UPSTREAM": upstream.rstrip("/"), "BENCH_ISSUER": op.issuer, "BENCH_CLIENT_ID": "gateway",
        "BENCH_CLIENT_SECRET": str(op.clients["gateway"]), "BENCH_PASSPHRASE": secrets.token_urlsafe(32),
        "BENCH_JWT_KEY": _rs256_key_file(op, directory), "BENCH_USER": user, "BENCH_GROUP": group,
        "BENCH_REDIS": redis or "",
    }
    argv = [_apache2() or "apache2", "-D", "FOREGROUND", *(["-D", "REDIS"] if redis else []), "-f", str(CONFIG)]
    return argv, env


def preexec() -> Callable[[], None]:
    """For Popen: Apache gets SIGTERM if the benchmark dies without stopping it (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)

    def set_pdeathsig() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    return set_pdeathsig


def wait_ready(proc: subprocess.Popen[bytes], url: str, directory: Path, timeout: float = 30) -> str | None:
    """None once `url` answers; the reason (the end of the error log) if Apache exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"apache2 exited with status {proc.returncode}: {_error_log_tail(directory)}"
        try:
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 - loopback
            return None
        except urllib.error.HTTPError:
            return None  # it answers
        except OSError:
            time.sleep(0.1)
    return f"no answer after {timeout:.0f}s: {_error_log_tail(directory)}"


def error_lines(directory: Path) -> list[str]:
    """The error log's lines at level error or worse (why wrk counted a failed request, say)."""
    try:
        lines = (directory / "error.log").read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if any(f":{level}]" in line for level in ("error", "crit", "alert", "emerg"))]


def _error_log_tail(directory: Path) -> str:
    try:
        lines = (directory / "error.log").read_text(errors="replace").splitlines()
    except OSError:
        return "(no error log)"
    return " | ".join(line for line in lines[-5:] if "warn]" not in line) or "(nothing but warnings)"


async def session_cookie(url: str) -> str:
    """Sign in through Apache as a browser would; its session cookie as `name=value`."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        result = await browser_login(browser, f"{url}/")
        if result.status != 200:
            raise RuntimeError(f"mod_auth_openidc login ended with {result.status}: {result.body[:300]}")
        return next(f"{c.key}={c.value}" for c in browser.cookie_jar if c.key == COOKIE)


async def logout(url: str, cookie: str) -> None:
    """mod_auth_openidc's local logout: deletes the session from its cache (Redis), then redirects to the
    OP's end_session_endpoint, which is not followed."""
    target = URL(f"{url}/oauth2/callback").with_query(logout=f"{url}/")
    async with aiohttp.ClientSession() as http:
        async with http.get(target, headers={"Cookie": cookie}, allow_redirects=False) as resp:
            await resp.read()
