"""The section models: one frozen pydantic model per YAML section, unknown keys rejected.

Rejected beyond types: OP URLs over plain http unless on a loopback host, the `none` algorithm and HS*
for bearer tokens, cookie secrets under 32 bytes, cookie names/domains a browser would drop. Cross-field
rules are field validators reading `info.data`, so they still run when an unrelated key is wrong; a rule
that blames a sibling key raises _Problems naming it. Reasons never contain a secret's value.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from gateway.config.redis_url import RedisTarget, has_hash_tag, parse_redis_url
from gateway.config.values import (
    Duration,
    HttpUrl,
    NonEmptyStr,
    OPUrl,
    PositiveDuration,
    _email_domain,
    _Problems,
    _regex,
)

__all__ = ["AccessSettings", "BearerSettings", "ClaimRegex", "HeaderSettings", "IdentityAssertionSettings",
           "OIDCSettings", "RuleSettings", "SessionSettings",
           "TrustedIssuerSettings", "UpstreamSettings"]

_ALLOWED_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
     "HS256", "HS384", "HS512"}
)
_COOKIE_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")  # an RFC 6265 token, conservatively
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_LOGIN_COOKIE_SUFFIX = "_login"
_MAX_CLOCK_SKEW = 600.0  # mod_auth_openidc's default iat slack; more would accept stale tokens
_MAX_LOGIN_TIMEOUT = 3600.0
# A preserved form lives in the session store with the pending login, and comes back in a page.
_PRESERVE_POST_DEFAULT = 64 * 1024
_PRESERVE_POST_MAX = 1024 * 1024


def _have(info: ValidationInfo, *names: str) -> bool:
    """True when every named sibling validated (a failed one is absent from info.data)."""
    return all(name in info.data for name in names)


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
    # code (default); "code id_token" (hybrid) and "id_token" (implicit) need response_mode form_post.
    response_type: Literal["code", "code id_token", "id_token"] = "code"
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
    introspection_endpoint: OPUrl | None = None

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

    @field_validator("response_mode")
    @classmethod
    def _front_channel_tokens_need_form_post(cls, mode: str, info: ValidationInfo) -> str:
        response_type = info.data.get("response_type", "code")
        if response_type != "code" and mode != "form_post":
            raise ValueError(f"must be form_post with response_type {response_type!r}: an ID token in the "
                             "URL fragment never reaches the gateway (OAuth 2.0 Form Post Response Mode)")
        return mode

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
    redis_username: str | None = None  # Redis 6 ACL user; or in redis_url
    redis_password: SecretStr | None = None
    key_prefix: NonEmptyStr = "oidc-gateway:"
    cookie_name: str = "_oidc_gateway"
    cookie_secret: SecretStr
    cookie_secure: bool = True
    cookie_domain: str | None = None
    lifetime: PositiveDuration = 8 * 3600.0
    idle_timeout: PositiveDuration = 3600.0
    refresh_before_expiry: Duration = 30.0
    # Serve a session read moments ago from process memory (kept coherent through Redis pub/sub).
    local_cache_ttl: Duration = 2.0
    # Deadline of one session-store operation (connect, retry on a dropped connection and answer included):
    # past it the request gets 503 store_unavailable (fail closed). Also the default Redis socket timeouts.
    redis_timeout: PositiveDuration = 1.0
    login_timeout: PositiveDuration = 600.0
    # Logins started but not finished, across all browsers: beyond this the oldest is dropped (flood bound).
    max_pending_logins: int = Field(default=100_000, ge=1)
    # Keys of the records in Redis (AES-GCM): the first encrypts, all decrypt; empty = derived from cookie_secret.
    # A string (e.g. from encryption_secrets_file) holds one secret per line.
    encryption_secrets: list[SecretStr] = []

    @field_validator("encryption_secrets", mode="before")
    @classmethod
    def _secret_lines(cls, value: object) -> object:
        return [line for line in value.splitlines() if line.strip()] if isinstance(value, str) else value

    @field_validator("encryption_secrets")
    @classmethod
    def _encryption_secret_length(cls, secrets: list[SecretStr]) -> list[SecretStr]:
        for i, secret in enumerate(secrets):
            if len(secret.get_secret_value().encode()) < 32:
                raise ValueError(f"entry {i} must be at least 32 bytes (generate one with: openssl rand -base64 32)")
        return secrets

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None, info: ValidationInfo) -> str | None:
        if url is None:
            if info.data.get("store") == "redis":
                raise ValueError("is required when store is redis")
        else:
            parse_redis_url(url)  # its ValueError names what is wrong, never the URL (it may hold a password)
        return url

    @field_validator("redis_username", "redis_password")
    @classmethod
    def _credentials_in_one_place(cls, value: str | SecretStr | None, info: ValidationInfo) -> str | SecretStr | None:
        if value is None:
            return None
        if not (value.get_secret_value() if isinstance(value, SecretStr) else value):
            raise ValueError("must not be empty (omit it when Redis needs none)")
        url = info.data.get("redis_url")
        target = parse_redis_url(url) if url else None
        in_url = target is not None and (target.username if info.field_name == "redis_username" else target.password)
        if in_url:
            what = "user name" if info.field_name == "redis_username" else "password"
            raise ValueError(f"is set but redis_url already carries a {what}: set it in one place")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _cluster_hash_tag(cls, prefix: str, info: ValidationInfo) -> str:
        url = info.data.get("redis_url")
        if url and parse_redis_url(url).mode == "cluster" and not has_hash_tag(prefix):
            raise ValueError(
                "must contain a hash tag such as {oidc-gateway}: with a redis+cluster:// URL: the store updates "
                "a session and its logout indexes together, so all its keys must hash to one cluster slot")
        return prefix

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
    def redis_target(self) -> RedisTarget | None:
        """The parsed redis_url: one node, Sentinel or Cluster."""
        return None if self.redis_url is None else parse_redis_url(self.redis_url)

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
    # OIDCPreservePost: a same-origin form POST without a session is replayed after the login.
    preserve_post: bool = False
    preserve_post_max_size: int = Field(default=_PRESERVE_POST_DEFAULT, ge=1, le=_PRESERVE_POST_MAX)

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


class TrustedIssuerSettings(_Model):
    """Another issuer whose Bearer JWTs are accepted, with its own keys and audiences."""

    issuer: OPUrl
    jwks_uri: OPUrl
    audiences: list[NonEmptyStr] = Field(min_length=1)
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, algs: list[str]) -> list[str]:
        if not algs or any(alg not in _ALLOWED_ALGS or alg.startswith("HS") for alg in algs):
            raise ValueError("must list asymmetric algorithms (RS*, PS*, ES*, EdDSA) only")
        return algs


class BearerSettings(_Model):
    enabled: bool = True
    audiences: list[NonEmptyStr] = Field(default_factory=list)  # [] = [oidc.client_id]
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"])
    # RFC 7662: opaque (non-JWT) tokens are introspected at the OP; off = they are 401.
    introspection: bool = False
    introspection_cache_size: int = Field(default=10_000, ge=1)
    introspection_negative_ttl: Duration = 30.0
    trusted_issuers: list[TrustedIssuerSettings] = Field(default_factory=list)
    accept_id_tokens: bool = False  # an ID token (aud = client_id) presented as Bearer

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


def _redirect_domain(domain: str) -> str:
    """`app.example.com` (that host only) or `.example.com` (any subdomain of it); no scheme or port."""
    labels = domain.lower().removeprefix(".").split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError("must be a host such as app.example.com or .example.com (no scheme, port or path)")
    if domain.startswith(".") and len(labels) < 2:
        raise ValueError("a suffix must name a domain below a top-level domain, e.g. .example.com")
    return domain.lower()


class ClaimRegex(_Model):
    """`{regex: ...}` in required_claims: the claim (or one element of a list claim) must fullmatch."""

    regex: Annotated[str, AfterValidator(_regex)]


_METHOD = re.compile(r"[A-Z]{1,20}")
_RESTRICTIONS = ("allowed_emails", "allowed_email_domains", "allowed_groups", "required_claims", "required_scopes")


class RuleSettings(_Model):
    """One access rule; the first whose path (regex, searched) and method match applies."""

    path: Annotated[str, AfterValidator(_regex)]
    methods: list[str] = Field(default_factory=list)  # [] = every method
    allowed_emails: list[NonEmptyStr] = Field(default_factory=list)
    allowed_email_domains: list[Annotated[str, AfterValidator(_email_domain)]] = Field(default_factory=list)
    allowed_groups: list[NonEmptyStr] = Field(default_factory=list)
    required_claims: dict[NonEmptyStr, str | int | bool | ClaimRegex] = Field(default_factory=dict)
    required_scopes: list[NonEmptyStr] = Field(default_factory=list)
    public: bool = False  # last: its validator reads the fields above

    @field_validator("methods")
    @classmethod
    def _methods(cls, methods: list[str]) -> list[str]:
        upper = [m.upper() for m in methods]
        if any(not _METHOD.fullmatch(m) for m in upper):
            raise ValueError("must be HTTP method names such as GET or POST")
        return upper

    @field_validator("public")
    @classmethod
    def _public_alone(cls, public: bool, info: ValidationInfo) -> bool:
        if public and any(info.data.get(k) for k in _RESTRICTIONS):
            raise ValueError("a public rule admits everyone: it cannot also restrict who passes")
        return public


class AccessSettings(_Model):
    public_paths: list[Annotated[str, AfterValidator(_regex)]] = Field(default_factory=list)
    allowed_email_domains: list[Annotated[str, AfterValidator(_email_domain)]] = Field(default_factory=list)
    allowed_groups: list[NonEmptyStr] = Field(default_factory=list)
    rules: list[RuleSettings] = Field(default_factory=list)
    # Hosts a login may return the browser to by absolute URL (rd): exact, or `.example.com` for subdomains.
    redirect_domains: list[Annotated[str, AfterValidator(_redirect_domain)]] = Field(default_factory=list)
    bearer: BearerSettings = BearerSettings()


class IdentityAssertionSettings(_Model):
    """A short JWT signed by the gateway, sent upstream so it can verify who the user is."""

    enabled: bool = False
    header: NonEmptyStr = "X-Auth-Request-Assertion"
    ttl: PositiveDuration = 60.0
    algorithm: Literal["ES256", "RS256"] = "ES256"
    # PEM private key (or private_key_file); None = a key generated at start-up, which is per process:
    # with several replicas or workers set one, or upstreams see signatures from keys they never fetched.
    private_key: SecretStr | None = None
    audience: NonEmptyStr | None = None  # the `aud` claim; None = no aud

    @field_validator("header")
    @classmethod
    def _token_name(cls, name: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9\-]{1,64}", name):
            raise ValueError("must be a header name of letters, digits and '-'")
        return name

    @field_validator("private_key")
    @classmethod
    def _pem(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and "-----BEGIN" not in key.get_secret_value():
            raise ValueError("must be a PEM private key")
        return key


# Header names the gateway owns or that would change how the request is framed or routed.
_RESERVED_HEADERS = frozenset({
    "authorization", "cookie", "host", "content-length", "content-type", "content-encoding", "transfer-encoding",
    "connection", "keep-alive", "te", "trailer", "upgrade", "expect", "forwarded", "x-real-ip", "x-request-id",
    "proxy-authorization", "proxy-connection",
})
_BUILT_IN = frozenset({"x-auth-request-user", "x-auth-request-email", "x-auth-request-preferred-username",
                       "x-auth-request-groups", "x-auth-request-id-token"})
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


class HeaderSettings(_Model):
    """Which identity headers go upstream (and in a forward-auth 202) beyond the X-Auth-Request-* set."""

    claims: dict[str, NonEmptyStr] = Field(default_factory=dict)  # header name -> claim name
    id_token: bool = False  # X-Auth-Request-Id-Token: the session's raw ID token
    access_token: bool = True  # Authorization: Bearer <access token>

    @field_validator("claims")
    @classmethod
    def _header_names(cls, claims: dict[str, str]) -> dict[str, str]:
        seen: set[str] = set()
        for name in claims:
            lower = name.lower()
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name: letters, digits and '-' only, at most 64")
            if lower in _RESERVED_HEADERS or lower in _BUILT_IN or lower.startswith(("x-forwarded-", "sec-")):
                raise ValueError(f"{name!r} is reserved: the gateway or the HTTP framing owns it")
            if lower in seen:
                raise ValueError(f"{name!r} is listed twice (header names are case-insensitive)")
            seen.add(lower)
        return claims
