"""Configuration: YAML → typed, frozen pydantic models. The only source of truth for settings.

Loading is pure (no network): `${VAR}` / `${VAR:-default}` interpolation in every string (`$${` is a
literal `${`), `*_file` twins for every secret (read from disk, trailing newlines stripped, relative
paths resolve against the config file's directory), durations such as `30s`, `8h`, `1h30m`, `250ms`
or plain seconds. Unknown keys and duplicate YAML keys are errors. Every problem is collected and
raised at once as ConfigError([(key path, reason), ...]) so `check-config` can list them all.

What it rejects, beyond types: issuers and OP endpoints over plain http unless on a loopback host
(OpenID Connect Discovery 1.0 §3 requires https), the `none` algorithm and HS* for bearer tokens,
cookie secrets under 32 bytes, a Secure cookie on an http public_url, cookie names/domains a browser
would drop, upstreams that shadow the gateway's own endpoints or point back at the gateway. Cross-field
rules are field validators reading `info.data`, so they still run when an unrelated key is wrong.
Reasons never contain a secret's value.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from gateway.errors import ConfigError

__all__ = [
    "AccessSettings",
    "BearerSettings",
    "OIDCSettings",
    "SessionSettings",
    "Settings",
    "UpstreamSettings",
    "load_settings",
    "parse_duration",
    "settings_from_mapping",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
# `$${` (a literal `${`), a well-formed reference, or a bare `${` that starts a malformed one.
_ENV_REF = re.compile(r"\$\$\{|\$\{(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\})?")
_ALLOWED_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
     "HS256", "HS384", "HS512"}
)
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # an RFC 6265 token, conservatively
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_RESERVED_PATHS = ("/oauth2", "/healthz", "/readyz", "/metrics")  # the gateway's own endpoints
_LOGIN_COOKIE_SUFFIX = "_login"
_MAX_CLOCK_SKEW = 600.0  # mod_auth_openidc's default iat slack; more would accept stale tokens
_MAX_LOGIN_TIMEOUT = 3600.0
_DURATION_HINT = "a duration such as 30s, 10m, 8h, 1h30m or 250ms"


class _Problems(ValueError):
    """Raised by a field validator to report problems at keys relative to its model, e.g. a sibling."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in items))
        self.items = items


def parse_duration(value: Any) -> float:
    """`30s`, `8h`, `1h30m`, `250ms`, `2d` or a number of seconds → seconds (float)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"must be {_DURATION_HINT}")
    if isinstance(value, str):
        text = value.strip()
        sign, text = (-1.0, text[1:]) if text.startswith("-") else (1.0, text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = sign * float(text)
        elif re.fullmatch(rf"(?:{_DURATION_PART.pattern})+", text):
            seconds = sign * sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not {_DURATION_HINT}")
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
NonEmptyStr = Annotated[str, AfterValidator(_not_blank)]


def _http_url(value: str) -> str:
    # The value is not echoed: a URL may carry credentials.
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials (user:password@)")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port lazily)
    except ValueError:
        raise ValueError("has an invalid port") from None
    return value


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761 §6.3
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _op_url(value: str) -> str:
    """OP URLs carry codes, tokens and keys: https, except on loopback for development."""
    parts = urlsplit(value)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise ValueError(
            "must use https: plain http is allowed only for a loopback host (localhost, 127.0.0.1, ::1)"
        )
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
OPUrl = Annotated[str, AfterValidator(_http_url), AfterValidator(_op_url)]


def _have(info: ValidationInfo, *names: str) -> bool:
    """True when every named sibling validated (a failed one is absent from info.data)."""
    return all(name in info.data for name in names)


def _origin(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _points_at_gateway(url: str, listen: str | None, public_url: str | None) -> bool:
    """Whether an upstream URL would send requests back into this gateway (a loop)."""
    host, port = _origin(url)
    if public_url is not None and (host, port) == _origin(public_url):
        return True
    if listen is None:
        return False
    listen_host, _, listen_port = listen.rpartition(":")
    listen_host = listen_host.strip("[]").lower()
    if port != int(listen_port):
        return False
    if listen_host in ("0.0.0.0", "::"):  # noqa: S104 (comparing, not binding)
        return _is_loopback(host)
    return host == listen_host or (_is_loopback(host) and _is_loopback(listen_host))


class _Model(BaseModel):
    # validate_default: cross-field validators must also run when a key is left at its default.
    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)


class OIDCSettings(_Model):
    issuer: OPUrl
    client_id: NonEmptyStr
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] = (
        "client_secret_basic"  # noqa: S105 (a method name, not a password)
    )
    id_token_signing_algs: list[str] = Field(default_factory=lambda: ["RS256"])
    pkce: bool = True
    extra_auth_params: dict[str, str] = Field(default_factory=dict)
    # Authing (and RFC-minded OPs) issue a refresh token only with prompt=consent.
    consent_for_offline_access: bool = True
    use_userinfo: bool = True
    response_mode: Literal["query", "form_post"] = "query"
    post_logout_redirect_url: HttpUrl | None = None
    clock_skew: Duration = 60.0
    http_timeout: PositiveDuration = 10.0
    discovery: bool = True
    discovery_retry_interval: PositiveDuration = 10.0
    jwks_min_refresh_interval: Duration = 60.0
    authorization_endpoint: OPUrl | None = None
    token_endpoint: OPUrl | None = None
    userinfo_endpoint: OPUrl | None = None
    jwks_uri: OPUrl | None = None
    end_session_endpoint: OPUrl | None = None
    revocation_endpoint: OPUrl | None = None

    @field_validator("issuer")
    @classmethod
    def _issuer_shape(cls, issuer: str) -> str:
        parts = urlsplit(issuer)
        if parts.query or parts.fragment:  # OIDC Discovery 1.0 §3
            raise ValueError("must not have a query or fragment")
        return issuer

    @field_validator("client_secret")
    @classmethod
    def _secret_not_empty(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and not secret.get_secret_value():
            raise ValueError("must not be empty (omit it for a public client)")
        return secret

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, scopes: list[str]) -> list[str]:
        if "openid" not in scopes:
            raise ValueError("must contain 'openid' (this is an OpenID Connect client)")
        if any(not s or " " in s for s in scopes):
            raise ValueError("scope values must be non-empty and contain no spaces")
        return scopes

    @field_validator("token_endpoint_auth_method")
    @classmethod
    def _needs_secret(cls, method: str, info: ValidationInfo) -> str:
        if method != "none" and _have(info, "client_secret") and info.data["client_secret"] is None:
            raise _Problems([("client_secret", f"is required with token_endpoint_auth_method {method} "
                                               "(set client_secret or client_secret_file)")])
        return method

    @field_validator("id_token_signing_algs")
    @classmethod
    def _algs(cls, algs: list[str], info: ValidationInfo) -> list[str]:
        if not algs:
            raise ValueError("must list at least one algorithm")
        for alg in algs:
            if alg.lower() == "none":
                raise ValueError("'none' is never accepted: ID tokens must be signed")
            if alg not in _ALLOWED_ALGS:
                supported = ", ".join(sorted(_ALLOWED_ALGS))
                raise ValueError(f"unsupported algorithm {alg!r}; use some of {supported}")
        if (any(a.startswith("HS") for a in algs) and _have(info, "client_secret")
                and info.data["client_secret"] is None):
            raise ValueError("HS* algorithms verify with the client_secret, which is not set")
        return algs

    @field_validator("pkce")
    @classmethod
    def _public_client_pkce(cls, pkce: bool, info: ValidationInfo) -> bool:
        if not pkce and info.data.get("token_endpoint_auth_method") == "none":
            raise ValueError("must stay true for a public client (token_endpoint_auth_method none)")
        return pkce

    @field_validator("extra_auth_params")
    @classmethod
    def _reserved_params(cls, params: dict[str, str]) -> dict[str, str]:
        reserved = {"client_id", "redirect_uri", "state", "nonce", "code_challenge",
                    "code_challenge_method", "response_type", "scope", "response_mode"}
        clash = sorted(reserved & params.keys())
        if clash:
            raise ValueError(f"must not set {', '.join(clash)}: the gateway sets these itself")
        return params

    @field_validator("clock_skew")
    @classmethod
    def _bounded_skew(cls, skew: float) -> float:
        if skew > _MAX_CLOCK_SKEW:
            raise ValueError("must be at most 10m: a larger skew accepts expired tokens for that long")
        return skew

    @field_validator("authorization_endpoint", "token_endpoint", "jwks_uri")
    @classmethod
    def _endpoint_without_discovery(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is not None or info.data.get("discovery", True):
            return url
        algs = info.data.get("id_token_signing_algs") or []
        if info.field_name == "jwks_uri" and algs and all(a.startswith("HS") for a in algs):
            return url  # HS* tokens verify with the client_secret, no keys to fetch
        raise ValueError("is required when discovery is false")


class SessionSettings(_Model):
    store: Literal["redis", "memory"] = "redis"
    redis_url: str | None = None
    redis_password: SecretStr | None = None
    key_prefix: NonEmptyStr = "oidc-gateway:"
    cookie_name: str = "_oidc_gateway"
    cookie_secret: SecretStr
    cookie_secure: bool = True
    cookie_domain: str | None = None
    lifetime: PositiveDuration = 8 * 3600.0
    idle_timeout: PositiveDuration = 3600.0
    refresh_before_expiry: Duration = 30.0
    login_timeout: PositiveDuration = 600.0

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            if info.data.get("store") == "redis":
                raise ValueError("is required when store is redis")
        elif urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("cookie_name")
    @classmethod
    def _cookie_name(cls, name: str) -> str:
        if not _COOKIE_NAME.fullmatch(name):
            raise ValueError("must be 1-64 characters of letters, digits, '_' and '-'")
        if name.endswith(_LOGIN_COOKIE_SUFFIX):
            raise ValueError(f"must not end with {_LOGIN_COOKIE_SUFFIX!r}: the login cookie is named "
                             f"<cookie_name>{_LOGIN_COOKIE_SUFFIX} and the two must never collide")
        return name

    @field_validator("cookie_secret")
    @classmethod
    def _secret_length(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (generate one with: openssl rand -base64 32)")
        return secret

    @field_validator("cookie_secure")
    @classmethod
    def _prefixed_cookie_secure(cls, secure: bool, info: ValidationInfo) -> bool:
        name = info.data.get("cookie_name", "")
        if not secure and name.startswith(("__Secure-", "__Host-")):
            raise ValueError(f"must be true: browsers drop a {name.split('-')[0]}- cookie without Secure")
        return secure

    @field_validator("cookie_domain")
    @classmethod
    def _cookie_domain(cls, domain: str | None, info: ValidationInfo) -> str | None:
        if domain is None:
            return None
        if info.data.get("cookie_name", "").startswith("__Host-"):
            raise ValueError("must not be set with a __Host- cookie_name (RFC 6265bis §4.1.3.2)")
        labels = domain.removeprefix(".").split(".")
        if not all(_HOST_LABEL.fullmatch(label) for label in labels):
            raise ValueError("must be a bare domain such as example.com (no scheme, port or path)")
        if len(labels) < 2 and labels != ["localhost"]:
            raise ValueError("must not be a top-level domain: the cookie would go to every site under it")
        return domain

    @field_validator("login_timeout")
    @classmethod
    def _bounded_login(cls, timeout: float) -> float:
        if timeout > _MAX_LOGIN_TIMEOUT:
            raise ValueError("must be at most 1h: a login that takes longer is abandoned")
        return timeout

    @property
    def login_cookie_name(self) -> str:
        """The short-lived cookie that carries a pending login (state, nonce, code_verifier)."""
        return f"{self.cookie_name}{_LOGIN_COOKIE_SUFFIX}"


class UpstreamSettings(_Model):
    path: str
    url: HttpUrl
    connect_timeout: PositiveDuration = 5.0
    read_timeout: PositiveDuration = 60.0
    websockets: bool = True
    pass_host_header: bool = False  # send the client's Host upstream instead of the upstream's own

    @field_validator("path")
    @classmethod
    def _path_prefix(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("must start with '/', e.g. / or /api/")
        if any(c in path for c in "?# \t"):
            raise ValueError("must be a plain path prefix (no query, fragment or spaces)")
        return path

    @field_validator("url")
    @classmethod
    def _no_query(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return url


class BearerSettings(_Model):
    enabled: bool = True
    audiences: list[NonEmptyStr] = Field(default_factory=list)  # [] = [oidc.client_id]
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algs: list[str], info: ValidationInfo) -> list[str]:
        for alg in algs:
            if alg not in _ALLOWED_ALGS or alg.startswith("HS"):
                raise ValueError(f"{alg!r} is not allowed: use asymmetric algorithms (RS*, PS*, ES*, EdDSA); "
                                 "an HS* bearer token could be minted by anyone holding the client_secret")
        if not algs and info.data.get("enabled"):
            raise ValueError("must list at least one algorithm while bearer is enabled")
        return algs


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {exc.msg}") from None
    return pattern


def _email_domain(domain: str) -> str:
    bare = domain.removeprefix("@")  # `@example.com` is tolerated; `user@example.com` is not a domain
    if not bare or "@" in bare or any(c.isspace() for c in bare):
        raise ValueError("must be a domain such as example.com, not an email address")
    return domain


class AccessSettings(_Model):
    public_paths: list[Annotated[str, AfterValidator(_regex)]] = Field(default_factory=list)
    allowed_email_domains: list[Annotated[str, AfterValidator(_email_domain)]] = Field(default_factory=list)
    allowed_groups: list[NonEmptyStr] = Field(default_factory=list)
    bearer: BearerSettings = BearerSettings()


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class Settings(_Model):
    listen: str = "127.0.0.1:4180"
    public_url: HttpUrl
    log_level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"
    shutdown_timeout: Duration = 30.0
    max_body_size: int = Field(default=0, ge=0)  # 0 = unlimited (streamed)
    oidc: OIDCSettings
    session: SessionSettings
    upstreams: list[UpstreamSettings] = Field(min_length=1)
    access: AccessSettings = AccessSettings()

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


# --- loading -----------------------------------------------------------------------------------

Problems = list[tuple[str, str]]


def _join(path: str, key: str) -> str:
    return f"{path}{key}" if not path or key.startswith("[") else f"{path}.{key}"


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The settings model an annotation holds directly, inside a list, or as an Optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next((m for m in map(_model_of, get_args(annotation)) if m is not None), None)


def _secret_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items()
            if field.annotation is SecretStr or SecretStr in get_args(field.annotation)}


def _interpolate(node: Any, path: str, environ: Mapping[str, str], problems: Problems) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if not isinstance(key, str):
                problems.append((_join(path, str(key)), "keys must be strings (quote it in YAML)"))
                continue
            out[key] = _interpolate(value, _join(path, key), environ, problems)
        return out
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group("name"), match.group("default")
        if match.group(0) == "$${":
            return "${"
        if name is None:
            problems.append((path, "malformed ${...} reference: write ${NAME} or ${NAME:-default}, "
                                   "or $${ for a literal ${"))
            return match.group(0)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append((path, f"environment variable {name} is not set"))
                return ""
            return default
        return value

    return _ENV_REF.sub(replace, node)


def _resolve_files(node: Any, model: type[BaseModel], path: str, base_dir: Path, problems: Problems) -> Any:
    """Replace `<secret>_file: PATH` by `<secret>: <contents>` for the model's SecretStr fields."""
    if not isinstance(node, dict):
        return node
    secrets = _secret_fields(model)
    out: dict[str, Any] = {}
    for key, value in node.items():
        key_path = _join(path, key)
        base = key.removesuffix("_file")
        if key.endswith("_file") and base in secrets:
            if base in node:
                problems.append((key_path, f"set either {base} or {key}, not both"))
            elif not isinstance(value, str) or not value:
                problems.append((key_path, "must be a file path"))
            else:
                try:
                    out[base] = (base_dir / value).read_text(encoding="utf-8").rstrip("\r\n")
                except (OSError, UnicodeDecodeError) as exc:
                    reason = getattr(exc, "strerror", None) or "not UTF-8 text"
                    problems.append((key_path, f"cannot read {value!r}: {reason}"))
            continue
        field = model.model_fields.get(key)
        sub = _model_of(field.annotation) if field else None
        if sub is not None and isinstance(value, list):
            out[key] = [_resolve_files(v, sub, f"{key_path}[{i}]", base_dir, problems)
                        for i, v in enumerate(value)]
        elif sub is not None:
            out[key] = _resolve_files(value, sub, key_path, base_dir, problems)
        else:
            out[key] = value
    return out


def _error_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not part.startswith("function-"):  # pydantic's validator branch names, not keys
            path = _join(path, part)
    return path or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] | None = Settings
    for part in loc:
        if isinstance(part, str):
            field = model.model_fields.get(part) if model else None
            model = _model_of(field.annotation) if field else None
    return model


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    model = _model_at(loc[:-1])
    if model is None:
        return "unknown key"
    known = [*model.model_fields, *(f"{s}_file" for s in _secret_fields(model))]
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.75)
    return f"unknown key (did you mean {close[0]}?)" if close else "unknown key"


_TYPE_REASONS = {
    "missing": "is required",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of key: value",
    "model_type": "must be a mapping of key: value",
    "model_attributes_type": "must be a mapping of key: value",
}


def _reason(err: Any) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return _unknown_key(err["loc"])
    if kind == "string_type":
        # Only the input's type is looked at, never its value.
        quoted = isinstance(err.get("input"), int | float | bool)
        return "must be a string" + (" (quote it in YAML)" if quoted else "")
    if kind == "literal_error":
        return f"must be {ctx['expected']}"
    if kind == "too_short":
        minimum = ctx.get("min_length")
        return "must not be empty" if minimum == 1 else f"needs at least {minimum} items"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("greater_than_equal", "greater_than"):
        return f"must be {'at least' if kind == 'greater_than_equal' else 'greater than'} " \
               f"{ctx.get('ge', ctx.get('gt'))}"
    return _TYPE_REASONS.get(kind, str(err["msg"]))


def _problems_from(exc: ValidationError) -> Problems:
    problems: Problems = []
    for err in exc.errors(include_url=False):
        error = (err.get("ctx") or {}).get("error")
        if isinstance(error, _Problems):
            parent = _error_path(err["loc"][:-1]).removeprefix("(top level)")
            problems.extend((_join(parent, key), reason) for key, reason in error.items)
        else:
            problems.append((_error_path(err["loc"]), _reason(err)))
    return problems


def _secret_values(node: Any, model: type[BaseModel]) -> list[str]:
    if isinstance(node, list):
        return [s for item in node for s in _secret_values(item, model)]
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if k in _secret_fields(model) and isinstance(v, str) and len(v) >= 4]
    for key, value in node.items():
        field = model.model_fields.get(key)
        sub = _model_of(field.annotation) if field else None
        if sub is not None:
            found += _secret_values(value, sub)
    return found


def settings_from_mapping(
    raw: Any, environ: Mapping[str, str] | None = None, *, base_dir: Path | None = None
) -> Settings:
    """Validate a parsed YAML document: interpolate, resolve *_file twins (relative to base_dir), check."""
    environ = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError([("(top level)", "the configuration must be a YAML mapping of key: value")])
    problems: Problems = []
    data = _interpolate(raw, "", environ, problems)
    data = _resolve_files(data, Settings, "", base_dir or Path.cwd(), problems)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        # A key already reported (unset variable, unreadable file) is not reported again.
        reported = {p for p, _ in problems} | {p.removesuffix("_file") for p, _ in problems}
        problems += [(p, r) for p, r in _problems_from(exc) if p not in reported]
        # Defence in depth: no reason may carry a secret's value, whatever echoed it.
        secrets = _secret_values(data, Settings)
        for i, (path, reason) in enumerate(problems):
            for secret in secrets:
                reason = reason.replace(secret, "***")
            problems[i] = (path, reason)
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def _duplicate_keys(node: yaml.Node, seen_nodes: set[int] | None = None) -> list[str]:
    """Keys given twice in one mapping, with their position: YAML would silently keep the last."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:  # an alias: already walked
        return []
    seen_nodes.add(id(node))
    found: list[str] = []
    if isinstance(node, yaml.MappingNode):
        keys: set[tuple[str, Any]] = set()
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if (key_node.tag, key_node.value) in keys:
                    mark = key_node.start_mark
                    found.append(f"duplicate key {key_node.value!r} at line {mark.line + 1}, "
                                 f"column {mark.column + 1}")
                keys.add((key_node.tag, key_node.value))
            found += _duplicate_keys(value_node, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found += _duplicate_keys(item, seen_nodes)
    return found


def _parse_yaml(text: str, where: str) -> tuple[Any, Problems]:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        # Before construction: resolving `<<` merge keys rewrites the nodes in place.
        duplicates = [] if node is None else _duplicate_keys(node)
        raw = None if node is None else loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot parse"
        raise ConfigError([(where, f"invalid YAML{at}: {problem}")]) from None
    finally:
        loader.dispose()
    if raw is None:
        raise ConfigError([(where, "is empty: expected a YAML mapping of settings")])
    if not isinstance(raw, dict):
        raise ConfigError([(where, f"must be a YAML mapping of key: value, not a {type(raw).__name__}")])
    return raw, [(where, d) for d in duplicates]


def load_settings(path: Path | str, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the YAML file at `path`; raise ConfigError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise ConfigError([(str(path), f"cannot read the file: {reason}")]) from None
    raw, problems = _parse_yaml(text, str(path))
    try:
        settings = settings_from_mapping(raw, environ, base_dir=path.parent)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems) from None
    if problems:
        raise ConfigError(problems)
    return settings
