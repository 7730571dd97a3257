"""A real OpenID Provider for the tests, and a script that drives its pages like a browser.

``TestOP`` runs ``tests/op/server.js`` (node ``oidc-provider``, pinned in ``tests/op/package.json``) on a
free loopback port. ``browser_login`` follows redirects by hand and submits the forms a person would:
the OP's login and consent pages, its RP-initiated logout confirmation, and auto-submitting
``response_mode=form_post`` pages. It trusts nothing it parses: it only reads forms out of the HTML.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

__all__ = ["CLIENTS", "USERS", "LoginResult", "TestOP", "browser_login"]

OP_DIR = Path(__file__).resolve().parent.parent / "op"
START_TIMEOUT = 20.0
MAX_HOPS = 20
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})

# client_id -> client_secret (None: public client, PKCE required); must match tests/op/server.js.
CLIENTS: Mapping[str, str | None] = {
    "gateway": "gateway-secret-0123456789abcdef",
    "gateway-post": "gateway-post-secret-0123456789ab",
    "gateway-public": None,
    "gateway-hs": "gateway-hs-secret-0123456789abcdef01",
    "gateway-es": "gateway-es-secret-0123456789abcdef01",
}
# username -> password
USERS: Mapping[str, str] = {"alice": "alice-password", "bob": "bob-password"}


def _is_loopback(url: URL) -> bool:
    host = url.host or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _urlopen(request: str | urllib.request.Request, timeout: float) -> Any:
    """urlopen that ignores *_proxy variables: the OP is on loopback."""
    return urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=timeout)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TestOP:
    """One ``node tests/op/server.js`` process on 127.0.0.1; ``start()`` returns once discovery answers."""

    __test__ = False  # not a pytest test class

    access_token_ttl: int = 3600
    id_token_ttl: int = 3600
    port: int = 0
    clients: Mapping[str, str | None] = field(default_factory=lambda: dict(CLIENTS))
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not on PATH; the test OP needs Node.js >= 20")
        if not (OP_DIR / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError(f"oidc-provider is not installed: run `npm ci` in {OP_DIR}")
        if not self.port:  # a restart keeps the port
            self.port = _free_port()
        self._log = tempfile.TemporaryFile()  # closed in stop()
        self._proc = subprocess.Popen(
            [node, "server.js"], cwd=OP_DIR, env=self._environment(), stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "OP_PORT": str(self.port),
            "OP_ISSUER": self.issuer,
            "OP_ACCESS_TOKEN_TTL": str(self.access_token_ttl),
            "OP_ID_TOKEN_TTL": str(self.id_token_ttl),
        }

    def _wait_ready(self) -> None:
        assert self._proc is not None
        url = f"{self.issuer}/.well-known/openid-configuration"
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with _urlopen(url, timeout=2) as resp:
                    if json.load(resp).get("issuer") == self.issuer:
                        return
            except OSError:
                pass
            try:  # the poll interval doubles as the check that node is still alive
                self._proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"test OP exited with status {self._proc.returncode}:\n{self.output()}")
        raise RuntimeError(f"test OP not ready after {START_TIMEOUT:.0f}s:\n{self.output()}")

    def output(self) -> str:
        """What node printed so far (stdout and stderr)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def stats(self) -> dict[str, dict[str, int]]:
        """Token-endpoint outcomes since the last reset: ``{"success": {grant_type: n}, "error": {...}}``."""
        with _urlopen(f"{self.issuer}/__test/stats", timeout=5) as resp:
            result: dict[str, dict[str, int]] = json.load(resp)
        return result

    def reset_stats(self) -> None:
        request = urllib.request.Request(f"{self.issuer}/__test/reset", method="POST")  # noqa: S310
        with _urlopen(request, timeout=5):
            pass

    def set_backchannel(self, client_id: str, uri: str | None, *, session_required: bool = True) -> None:
        """Set (``None``: remove) the client's ``backchannel_logout_uri``; with ``session_required`` the OP
        puts ``sid`` in that client's ID tokens and logout tokens. Lasts until the next call."""
        form = urllib.parse.urlencode({"client_id": client_id, "uri": uri or "",
                                       "session_required": "true" if session_required else "false"})
        request = urllib.request.Request(f"{self.issuer}/__test/backchannel", data=form.encode(),  # noqa: S310
                                         method="POST")
        with _urlopen(request, timeout=5):
            pass


@dataclass(frozen=True, slots=True)
class LoginResult:
    """The first response that was neither a redirect nor a page the driver knows how to submit."""

    status: int
    headers: CIMultiDictProxy[str]
    url: URL
    body: str
    visited: tuple[str, ...]


@dataclass(slots=True)
class _Form:
    method: str
    action: str | None
    id: str | None
    # attributes of the <input>s and <button>s that belong to the form, plus "tag"
    controls: list[dict[str, str]] = field(default_factory=list)

    def hidden(self) -> dict[str, str]:
        return {
            c["name"]: c.get("value", "")
            for c in self.controls
            if c.get("name") and c.get("tag") == "input" and c.get("type", "text").lower() == "hidden"
        }

    def has(self, kind: str) -> bool:
        return any(c.get("tag") == "input" and c.get("type", "text").lower() == kind for c in self.controls)


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[_Form] = []
        self._current: _Form | None = None
        self._detached: list[dict[str, str]] = []  # controls linked by form="id"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self._current = _Form(
                method=attributes.get("method", "get").lower(),
                action=attributes.get("action"),
                id=attributes.get("id"),
            )
            self.forms.append(self._current)
        elif tag in ("input", "button"):
            control = {"tag": tag, **attributes}
            if "form" in attributes:
                self._detached.append(control)
            elif self._current is not None:
                self._current.controls.append(control)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None

    def close(self) -> None:
        super().close()
        by_id = {form.id: form for form in self.forms if form.id}
        for control in self._detached:
            if (owner := by_id.get(control["form"])) is not None:
                owner.controls.append(control)


def _forms(body: str) -> list[_Form]:
    parser = _FormParser()
    parser.feed(body)
    parser.close()
    return parser.forms


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str  # "login" | "consent" | "logout" | "form_post"
    url: URL
    data: dict[str, str]


def _next_step(page_url: URL, body: str, *, username: str, password: str, consent: bool, logout: bool) -> _Step | None:
    """Which form a person would submit on this page, or None if the page is not one we handle."""
    forms = [f for f in _forms(body) if f.method == "post"]
    for form in forms:
        target = page_url.join(URL(form.action or str(page_url)))
        if form.has("password"):
            data = form.hidden()
            for control in form.controls:
                name, kind = control.get("name"), control.get("type", "text").lower()
                if name and kind == "password":
                    data[name] = password
                elif name and kind in ("text", "email") and control.get("tag") == "input":
                    data[name] = username
            return _Step("login", target, data)
        if target.path.endswith("/session/end/confirm"):
            data = form.hidden()
            if logout:
                data["logout"] = "yes"
            else:
                data.pop("logout", None)
            return _Step("logout", target, data)
    for form in forms:
        target = page_url.join(URL(form.action or str(page_url)))
        if "/interaction/" in target.path and target.path.endswith("/confirm" if consent else "/abort"):
            return _Step("consent", target, form.hidden())
    if len(forms) == 1:
        form = forms[0]
        target = page_url.join(URL(form.action or str(page_url)))
        only_hidden = all(c.get("type", "text").lower() == "hidden" for c in form.controls if c["tag"] == "input")
        if only_hidden and form.hidden() and target.origin() != page_url.origin():
            return _Step("form_post", target, form.hidden())
    return None


async def browser_login(
    http: aiohttp.ClientSession,
    url: str | URL,
    username: str = "alice",
    password: str = "alice-password",  # noqa: S107 - the test user's
    *,
    consent: bool = True,
    logout: bool = True,
    headers: Mapping[str, str] | None = None,
    stop_at: Callable[[URL], bool] | None = None,
) -> LoginResult:
    """Navigate to ``url`` as a browser would and sign in on the way.

    Redirects are followed by hand (the session must keep cookies: ``aiohttp.CookieJar(unsafe=True)``
    for IP hosts). On an OP login page the credentials are posted; a second login page in a row (wrong
    password) is returned. On a consent page "Allow" is posted (``consent=False``: "Deny"); on a logout
    confirmation "Yes, sign me out" (``logout=False``: "No"); a form_post page (hidden inputs, action on
    another origin) is submitted. ``stop_at(next_url)`` returning True ends the walk before requesting
    ``next_url``; the result is then the redirect that pointed there. A URL off loopback raises
    ``RuntimeError`` instead of being requested: tests never leave this machine.
    """
    request_headers = {"Accept": "text/html", **(headers or {})}
    method, target, data = "GET", URL(url), None
    visited: list[str] = []
    previous: str | None = None
    for _ in range(MAX_HOPS):
        if not _is_loopback(target):
            raise RuntimeError(f"browser_login: refusing to leave loopback for {target}")
        visited.append(str(target))
        async with http.request(method, target, data=data, headers=request_headers, allow_redirects=False) as resp:
            body = await resp.text(errors="replace")
        result = LoginResult(resp.status, resp.headers, target, body, tuple(visited))
        location = resp.headers.get("Location")
        if resp.status in REDIRECT_STATUSES and location:
            next_url = target.join(URL(location))
            if stop_at is not None and stop_at(next_url):
                return result
            if resp.status not in (307, 308):
                method, data = "GET", None
            target, previous = next_url, None
            continue
        step = _next_step(target, body, username=username, password=password, consent=consent, logout=logout)
        if step is None or (step.kind == "login" and previous == "login"):
            return result
        if stop_at is not None and stop_at(step.url):
            return result
        method, target, data, previous = "POST", step.url, step.data, step.kind
    raise RuntimeError(f"browser_login: no final page after {MAX_HOPS} hops: {visited}")
