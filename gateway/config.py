"""Configuration: YAML → typed, frozen pydantic models. The only source of truth for settings.

Loading is pure (no network): `${VAR}` / `${VAR:-default}` interpolation in every string, `*_file`
twins for secrets (read from disk, one trailing newline stripped), durations such as `30s`, `8h`,
`1h30m`, `250ms` or plain seconds. Unknown keys are errors. Every problem is collected and raised at
once as ConfigError([(key path, reason), ...]) so `check-config` can list them all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
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
    field_validator,
    model_validator,
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
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Secrets that have a `<name>_file` twin.
_SECRET_KEYS = ("client_secret", "cookie_secret", "redis_password")
_ALLOWED_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
     "HS256", "HS384", "HS512"}
)


def parse_duration(value: Any) -> float:
    """`30s`, `8h`, `1h30m`, `250ms`, `2d` or a number of seconds → seconds (float)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 10m or 8h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif re.fullmatch(rf"(?:{_DURATION_PART.pattern})+", text):
            seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))
        else:
            raise ValueError(f"{value!r} is not a duration such as 30s, 10m or 8h")
    else:
        raise ValueError("must be a duration such as 30s, 10m or 8h")
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError("must be greater than zero")
    return value


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an absolute http(s) URL")
    if parts.username or parts.password:
        raise ValueError("must not contain credentials")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OIDCSettings(_Model):
    issuer: HttpUrl
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"])
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post", "none"] = (
        "client_secret_basic"
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
    authorization_endpoint: HttpUrl | None = None
    token_endpoint: HttpUrl | None = None
    userinfo_endpoint: HttpUrl | None = None
    jwks_uri: HttpUrl | None = None
    end_session_endpoint: HttpUrl | None = None
    revocation_endpoint: HttpUrl | None = None

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, scopes: list[str]) -> list[str]:
        if "openid" not in scopes:
            raise ValueError("must contain 'openid'")
        if any(not s or " " in s for s in scopes):
            raise ValueError("scope values must be non-empty and contain no spaces")
        return scopes

    @field_validator("id_token_signing_algs")
    @classmethod
    def _algs(cls, algs: list[str]) -> list[str]:
        if not algs:
            raise ValueError("must list at least one algorithm")
        for alg in algs:
            if alg.lower() == "none":
                raise ValueError("'none' is never accepted")
            if alg not in _ALLOWED_ALGS:
                raise ValueError(f"unsupported algorithm {alg!r}; use some of {sorted(_ALLOWED_ALGS)}")
        return algs

    @field_validator("extra_auth_params")
    @classmethod
    def _reserved_params(cls, params: dict[str, str]) -> dict[str, str]:
        reserved = {"client_id", "redirect_uri", "state", "nonce", "code_challenge",
                    "code_challenge_method", "response_type", "scope", "response_mode"}
        clash = sorted(reserved & params.keys())
        if clash:
            raise ValueError(f"must not set {', '.join(clash)}: the gateway sets these itself")
        return params

    @model_validator(mode="after")
    def _consistency(self) -> OIDCSettings:
        if self.token_endpoint_auth_method != "none" and self.client_secret is None:
            raise ValueError(
                f"client_secret (or client_secret_file) is required with "
                f"token_endpoint_auth_method {self.token_endpoint_auth_method}"
            )
        if self.token_endpoint_auth_method == "none" and not self.pkce:
            raise ValueError("pkce must stay true for a public client (token_endpoint_auth_method none)")
        if any(a.startswith("HS") for a in self.id_token_signing_algs) and self.client_secret is None:
            raise ValueError("HS* id_token_signing_algs verify with the client_secret, which is not set")
        if not self.discovery:
            missing = [k for k in ("authorization_endpoint", "token_endpoint") if getattr(self, k) is None]
            if self.jwks_uri is None and not all(a.startswith("HS") for a in self.id_token_signing_algs):
                missing.append("jwks_uri")
            if missing:
                raise ValueError(f"with discovery false, set {', '.join(missing)}")
        return self


class SessionSettings(_Model):
    store: Literal["redis", "memory"] = "redis"
    redis_url: str | None = None
    redis_password: SecretStr | None = None
    key_prefix: str = "oidc-gateway:"
    cookie_name: str = Field(default="_oidc_gateway", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    cookie_secret: SecretStr
    cookie_secure: bool = True
    cookie_domain: str | None = None
    lifetime: PositiveDuration = 8 * 3600.0
    idle_timeout: PositiveDuration = 3600.0
    refresh_before_expiry: Duration = 30.0
    login_timeout: PositiveDuration = 600.0

    @field_validator("cookie_secret")
    @classmethod
    def _secret_length(cls, secret: SecretStr) -> SecretStr:
        if len(secret.get_secret_value().encode()) < 32:
            raise ValueError("must be at least 32 bytes (generate one with: openssl rand -base64 32)")
        return secret

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str | None) -> str | None:
        if url is not None and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url

    @model_validator(mode="after")
    def _store_needs_url(self) -> SessionSettings:
        if self.store == "redis" and not self.redis_url:
            raise ValueError("redis_url is required when store is redis")
        return self


class UpstreamSettings(_Model):
    path: str = Field(pattern=r"^/")
    url: HttpUrl
    connect_timeout: PositiveDuration = 5.0
    read_timeout: PositiveDuration = 60.0
    websockets: bool = True
    pass_host_header: bool = False  # send the client's Host upstream instead of the upstream's own

    @field_validator("url")
    @classmethod
    def _no_query(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return url


class BearerSettings(_Model):
    enabled: bool = True
    audiences: list[str] = Field(default_factory=list)  # [] = [oidc.client_id]
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, algs: list[str]) -> list[str]:
        for alg in algs:
            if alg not in _ALLOWED_ALGS or alg.startswith("HS"):
                raise ValueError(f"{alg!r} is not an allowed asymmetric algorithm")
        return algs


def _regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a valid regular expression: {exc.msg}") from None
    return pattern


class AccessSettings(_Model):
    public_paths: list[Annotated[str, AfterValidator(_regex)]] = Field(default_factory=list)
    allowed_email_domains: list[str] = Field(default_factory=list)
    allowed_groups: list[str] = Field(default_factory=list)
    bearer: BearerSettings = BearerSettings()


class Settings(_Model):
    listen: str = "127.0.0.1:4180"
    public_url: HttpUrl
    log_level: Literal["debug", "info", "warning", "error"] = "info"
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
            raise ValueError("must be host:port, e.g. 0.0.0.0:4180")
        return listen

    @field_validator("public_url")
    @classmethod
    def _origin_only(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be an origin such as https://app.example.com (no path or query)")
        return url.rstrip("/")

    @field_validator("upstreams")
    @classmethod
    def _unique_paths(cls, upstreams: list[UpstreamSettings]) -> list[UpstreamSettings]:
        seen: set[str] = set()
        for up in upstreams:
            if up.path in seen:
                raise ValueError(f"path {up.path!r} is listed twice")
            if up.path.startswith("/oauth2/") or up.path == "/oauth2":
                raise ValueError(f"path {up.path!r} is reserved for the gateway's own endpoints")
            seen.add(up.path)
        return upstreams

    @model_validator(mode="after")
    def _secure_cookie_needs_https(self) -> Settings:
        if self.session.cookie_secure and not self.public_url.startswith("https://"):
            raise ValueError(
                "session.cookie_secure is true but public_url is not https: browsers would drop the "
                "cookie; use https, or set cookie_secure: false for plain-http development"
            )
        return self

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


def _interpolate(node: Any, path: str, environ: Mapping[str, str], problems: list[tuple[str, str]]) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}" if path else str(k), environ, problems)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]", environ, problems) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if value is None or (value == "" and default is not None):
            if default is None:
                problems.append((path, f"environment variable {name} is not set"))
                return ""
            return default
        return value

    return _ENV_REF.sub(replace, node)


def _resolve_files(node: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    """Replace `<secret>_file: PATH` by `<secret>: <contents>` wherever a secret twin may stand."""
    if isinstance(node, list):
        return [_resolve_files(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        key_path = f"{path}.{key}" if path else str(key)
        base = key[: -len("_file")] if isinstance(key, str) and key.endswith("_file") else None
        if base in _SECRET_KEYS:
            if base in node:
                problems.append((key_path, f"set either {base} or {key}, not both"))
                continue
            try:
                out[base] = Path(str(value)).read_text(encoding="utf-8").removesuffix("\n")
            except (OSError, UnicodeDecodeError) as exc:
                problems.append((key_path, f"cannot read {value!r}: {getattr(exc, 'strerror', None) or exc}"))
            continue
        out[key] = _resolve_files(value, key_path, problems)
    return out


def _error_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-") or part in ("str", "float", "int"):
            continue  # pydantic's union/validator branch names, not keys
        else:
            path += f".{part}" if path else part
    return path or "(top level)"


def _problems_from(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "is required"
        problems.append((_error_path(err["loc"]), msg))
    return problems


def settings_from_mapping(raw: Any, environ: Mapping[str, str] | None = None) -> Settings:
    """Validate an already-parsed YAML document (after interpolation and *_file resolution)."""
    environ = os.environ if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError([("(top level)", "the configuration must be a YAML mapping")])
    problems: list[tuple[str, str]] = []
    data = _resolve_files(_interpolate(raw, "", environ, problems), "", problems)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        problems.extend(_problems_from(exc))
        raise ConfigError(problems) from None
    if problems:
        raise ConfigError(problems)
    return settings


def load_settings(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the YAML file at `path`; raise ConfigError listing every problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([("(file)", f"cannot read {str(path)!r}: {getattr(exc, 'strerror', None) or exc}")])
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(file)"
        raise ConfigError([(where, f"invalid YAML: {getattr(exc, 'problem', None) or 'parse error'}")]) from None
    return settings_from_mapping(raw, environ)
