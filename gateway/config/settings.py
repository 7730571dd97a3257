"""Settings: the root model, and the rules that span sections.

A Secure cookie needs an https public_url, and a cookie_domain must cover the public_url host (browsers
would drop the cookie otherwise). Upstream paths must be unique and must not shadow the gateway's own
endpoints; an upstream URL must not point back at the gateway (listen or public_url). Bearer tokens
need oidc.jwks_uri when discovery is off. A pages_dir must be an existing directory whose *.html files
read as UTF-8 (a relative one resolves against the config file's directory, as `*_file` paths do).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from gateway.config.models import (
    AccessSettings,
    HeaderSettings,
    IdentityAssertionSettings,
    OIDCSettings,
    SessionSettings,
    UpstreamSettings,
    _have,
    _Model,
)
from gateway.config.values import Duration, HttpUrl, PositiveDuration, _lower, _points_at_gateway, _Problems

__all__ = ["Settings"]

_RESERVED_PATHS = ("/oauth2", "/healthz", "/readyz", "/metrics")  # the gateway's own endpoints
_MIN_WORKERS, _MAX_WORKERS = 1, 64


class Settings(_Model):
    listen: str = "127.0.0.1:4180"
    public_url: HttpUrl
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    log_format: Annotated[Literal["text", "json", "logfmt"], BeforeValidator(_lower)] = "text"
    shutdown_timeout: Duration = 30.0
    workers: int = 1  # processes serving `listen` together (SO_REUSEPORT)
    max_body_size: int = Field(default=0, ge=0)  # 0 = unlimited (streamed)
    max_header_size: int = Field(default=8192, ge=1024, le=1024 * 1024)  # request target / one header field
    header_timeout: PositiveDuration = 20.0  # a request head must be complete within this
    pages_dir: Path | None = None  # overrides of gateway/web/templates/*.html; None = the built-in pages
    oidc: OIDCSettings
    session: SessionSettings
    upstreams: list[UpstreamSettings] = Field(min_length=1)
    access: AccessSettings = AccessSettings()
    headers: HeaderSettings = HeaderSettings()
    identity_assertion: IdentityAssertionSettings = IdentityAssertionSettings()

    @field_validator("listen")
    @classmethod
    def _host_port(cls, listen: str) -> str:
        host, sep, port = listen.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port with a port from 1 to 65535, e.g. 0.0.0.0:4180")
        if any(c.isspace() or c in "/@" for c in host):
            raise ValueError(f"{host!r} is not a host name or IP address (no scheme or path)")
        if host.startswith("["):
            try:
                ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
            except ValueError:
                raise ValueError(f"{host!r} is not a bracketed IPv6 address such as [::]") from None
        elif ":" in host:
            raise ValueError("an IPv6 host needs brackets, e.g. [::]:4180")
        return listen

    @field_validator("workers")
    @classmethod
    def _worker_count(cls, workers: int) -> int:
        if not _MIN_WORKERS <= workers <= _MAX_WORKERS:
            raise ValueError(f"must be from {_MIN_WORKERS} to {_MAX_WORKERS} (one per CPU core is typical)")
        return workers

    @field_validator("pages_dir", mode="before")
    @classmethod
    def _pages_dir_given(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty (leave it out, or null, for the built-in pages)")
        return value

    @field_validator("pages_dir")
    @classmethod
    def _pages_dir(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None:
            return None
        if not path.is_absolute():
            path = Path((info.context or {}).get("base_dir") or Path.cwd()) / path
        if not path.exists():
            raise ValueError(f"{path} does not exist")
        if not path.is_dir():
            raise ValueError(f"{path} is not a directory")
        for template in sorted(path.glob("*.html")):
            try:
                template.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                raise ValueError(f"{template.name} can't be read as UTF-8 text") from None
        return path

    @field_validator("public_url")
    @classmethod
    def _origin_only(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be an origin such as https://app.example.com (no path or query): "
                             "the gateway owns /oauth2/* at the root")
        return url.rstrip("/")

    @field_validator("session")
    @classmethod
    def _cookie_fits_public_url(cls, session: SessionSettings, info: ValidationInfo) -> SessionSettings:
        if not _have(info, "public_url"):
            return session
        public_url = info.data["public_url"]
        problems = []
        if session.cookie_secure and not public_url.startswith("https://"):
            problems.append(("session.cookie_secure", (
                f"is true but public_url {public_url} is not https: browsers would drop the cookie; "
                "use https, or set cookie_secure: false for plain-http development")))
        host = (urlsplit(public_url).hostname or "").lower()
        domain = (session.cookie_domain or "").removeprefix(".").lower()
        if domain and host != domain and not host.endswith(f".{domain}"):
            problems.append(("session.cookie_domain", (
                f"{domain!r} does not cover the public_url host {host!r}: browsers would reject the cookie")))
        if problems:
            raise _Problems(problems)
        return session

    @field_validator("session")
    @classmethod
    def _store_shared_by_workers(cls, session: SessionSettings, info: ValidationInfo) -> SessionSettings:
        workers = info.data.get("workers", 1)
        if workers > 1 and session.store == "memory":
            raise _Problems([("session.store", (
                f"must be redis with workers: {workers}: each worker process has its own memory, so a session "
                "made by one worker would be unknown to the others; use store: redis, or workers: 1"))])
        return session

    @field_validator("upstreams")
    @classmethod
    def _upstream_table(
        cls, upstreams: list[UpstreamSettings], info: ValidationInfo
    ) -> list[UpstreamSettings]:
        problems: list[tuple[str, str]] = []
        first: dict[str, int] = {}
        for i, up in enumerate(upstreams):
            key = f"upstreams[{i}]"
            if up.path in first:
                problems.append((f"{key}.path", f"is already used by upstreams[{first[up.path]}]"))
            first.setdefault(up.path, i)
            for reserved in _RESERVED_PATHS:
                if up.path.rstrip("/") == reserved or up.path.startswith(f"{reserved}/"):
                    problems.append((f"{key}.path", f"is reserved for the gateway's own {reserved} endpoint"))
            if _points_at_gateway(up.url, info.data.get("listen"), info.data.get("public_url")):
                problems.append((f"{key}.url", "points at the gateway itself (listen or public_url): "
                                               "requests would loop"))
        if problems:
            raise _Problems(problems)
        return upstreams

    @field_validator("access")
    @classmethod
    def _bearer_keys(cls, access: AccessSettings, info: ValidationInfo) -> AccessSettings:
        oidc = info.data.get("oidc")
        if access.bearer.enabled and oidc and not oidc.discovery and oidc.jwks_uri is None:
            raise _Problems([("access.bearer.enabled", (
                "bearer tokens verify against oidc.jwks_uri, which is not set while discovery is false; "
                "set oidc.jwks_uri or disable bearer"))])
        return access

    @field_validator("identity_assertion")
    @classmethod
    def _shared_assertion_key(cls, assertion: IdentityAssertionSettings,
                              info: ValidationInfo) -> IdentityAssertionSettings:
        if assertion.enabled and assertion.private_key is None and info.data.get("workers", 1) > 1:
            raise _Problems([("identity_assertion.private_key", (
                "is required with several workers: a generated key is per process, so each worker would "
                "sign with a key the others' /.well-known/jwks.json does not publish"))])
        return assertion

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_url}/oauth2/callback"

    @property
    def bearer_audiences(self) -> list[str]:
        return self.access.bearer.audiences or [self.oidc.client_id]
