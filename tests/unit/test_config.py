"""Configuration: defaults, interpolation, *_file twins, durations, and every rule's key path + reason.

Each rule test names the exact key path and a fragment of the reason, so removing the rule (or
moving the problem to another key) fails it. The valid counterpart next to it keeps the rule from
being over-broad.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
import yaml
from pydantic import BaseModel

from gateway.config import Settings, load_settings, parse_duration, settings_from_mapping
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
COOKIE_SECRET = "at-least-32-bytes-of-random-secret-material"

# The minimal file of interface.md, verbatim.
MINIMAL_YAML = """\
listen: "127.0.0.1:4180"               # host:port
public_url: "http://127.0.0.1:4180"    # how browsers reach the gateway
oidc:
  issuer: "http://127.0.0.1:9000"      # discovery: {issuer}/.well-known/openid-configuration
  client_id: "gateway"
  client_secret: "s3cret"
  scopes: [openid, profile, email, offline_access]
  token_endpoint_auth_method: client_secret_basic   # | client_secret_post | none
session:
  store: redis                          # redis | memory
  redis_url: "redis://127.0.0.1:6379/0"
  cookie_secret: "at-least-32-bytes-of-random-secret-material"
  cookie_secure: false                  # true by default; false only for plain-http dev
upstreams:
  - path: /
    url: "http://127.0.0.1:8080"
"""

# The optional keys of interface.md, verbatim.
OPTIONAL_YAML = """\
oidc:
  id_token_signing_algs: [RS256]        # allow-list; HS256 verifies with client_secret (Authing's default)
  pkce: true                            # [true] S256
  extra_auth_params: {prompt: consent}  # merged into the authorization request
  use_userinfo: true                    # [true] fetch /userinfo after login; its sub must equal the ID's
  post_logout_redirect_url: "http://127.0.0.1:4180/"
  clock_skew: 60s                       # [60s]
session:
  cookie_name: _oidc_gateway            # [_oidc_gateway]
  lifetime: 8h                          # [8h] absolute
  idle_timeout: 1h                      # [1h]
  refresh_before_expiry: 30s            # [30s] refresh the access token this long before it expires
access:
  public_paths: ["^/public/"]           # regexes on the path; no authentication at all
  allowed_email_domains: []             # [] = any
  allowed_groups: []                    # [] = any; read from the `groups` claim
  bearer:
    enabled: true                       # [true] accept `Authorization: Bearer <JWT>` from API clients
    audiences: ["gateway"]              # [client_id]
"""


def minimal() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(MINIMAL_YAML))


def merged(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    out = copy.deepcopy(minimal() if base is None else base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(value, out[key])
        else:
            out[key] = value
    return out


def load(raw: dict[str, Any], environ: dict[str, str] | None = None, **kw: Any) -> Settings:
    return settings_from_mapping(raw, {} if environ is None else environ, **kw)


def problems_of(raw: Any, environ: dict[str, str] | None = None, **kw: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        load(raw, environ, **kw)
    return info.value.problems


def assert_problem(problems: list[tuple[str, str]], path: str, fragment: str) -> None:
    hits = [reason for key, reason in problems if key == path]
    assert any(fragment in reason for reason in hits), f"no {path!r} problem with {fragment!r} in {problems}"


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- the documented shape and defaults ---------------------------------------------------------


def test_minimal_file_from_interface_md_has_documented_defaults(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, MINIMAL_YAML), environ={})
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 4180)
    assert s.public_url == "http://127.0.0.1:4180"
    assert s.redirect_uri == "http://127.0.0.1:4180/oauth2/callback"
    assert s.oidc.client_secret is not None and s.oidc.client_secret.get_secret_value() == "s3cret"
    assert s.oidc.scopes == ["openid", "profile", "email", "offline_access"]
    assert s.oidc.pkce is True and s.oidc.use_userinfo is True
    assert s.oidc.clock_skew == 60 and s.oidc.id_token_signing_algs == ["RS256"]
    assert s.session.cookie_name == "_oidc_gateway"
    assert s.session.login_cookie_name == "_oidc_gateway_login"
    assert s.session.lifetime == 28800 and s.session.idle_timeout == 3600
    assert s.session.refresh_before_expiry == 30
    assert s.session.cookie_secure is False
    assert s.access.bearer.enabled is True and s.access.bearer.audiences == []
    assert s.bearer_audiences == ["gateway"]
    assert s.access.public_paths == [] and s.log_level == "info"


def test_cookie_secure_defaults_to_true() -> None:
    raw = merged({"public_url": "https://gw.example.com"})
    del raw["session"]["cookie_secure"]
    assert load(raw).session.cookie_secure is True


def test_optional_keys_from_interface_md_are_accepted() -> None:
    s = load(merged(yaml.safe_load(OPTIONAL_YAML)))
    assert s.oidc.extra_auth_params == {"prompt": "consent"}
    assert s.oidc.post_logout_redirect_url == "http://127.0.0.1:4180/"
    assert s.access.public_paths == ["^/public/"]
    assert s.bearer_audiences == ["gateway"]
    assert s.session.lifetime == 8 * 3600 and s.session.refresh_before_expiry == 30


def test_settings_are_frozen() -> None:
    s = load(minimal())
    with pytest.raises(ValueError, match="frozen"):
        s.listen = "0.0.0.0:1"  # type: ignore[misc]  # noqa: S104


def test_bearer_audiences_override_client_id() -> None:
    s = load(merged({"access": {"bearer": {"audiences": ["api", "gateway"]}}}))
    assert s.bearer_audiences == ["api", "gateway"]


def test_public_client_with_pkce_needs_no_secret() -> None:
    raw = merged({"oidc": {"token_endpoint_auth_method": "none"}})
    del raw["oidc"]["client_secret"]
    assert load(raw).oidc.client_secret is None


def test_log_level_is_case_insensitive_but_checked() -> None:
    assert load(merged({"log_level": "DEBUG"})).log_level == "debug"
    assert_problem(problems_of(merged({"log_level": "verbose"})), "log_level", "'info'")


# --- interpolation -----------------------------------------------------------------------------


def test_env_reference_is_substituted() -> None:
    raw = merged({"oidc": {"client_id": "${CID}", "client_secret": "pre-${SECRET}-post"}})
    s = load(raw, {"CID": "from-env", "SECRET": "x"})
    assert s.oidc.client_id == "from-env"
    assert s.oidc.client_secret is not None and s.oidc.client_secret.get_secret_value() == "pre-x-post"


def test_env_default_is_used_when_unset_or_empty() -> None:
    raw = merged({"oidc": {"client_id": "${CID:-fallback}"}})
    assert load(raw, {}).oidc.client_id == "fallback"
    assert load(raw, {"CID": ""}).oidc.client_id == "fallback"
    assert load(raw, {"CID": "set"}).oidc.client_id == "set"


def test_interpolation_reaches_list_items_and_non_string_keys() -> None:
    raw = merged({"oidc": {"scopes": ["openid", "${EXTRA}"]},
                  "session": {"cookie_secure": "${SECURE:-false}"}, "max_body_size": "${MAX:-1024}"})
    s = load(raw, {"EXTRA": "groups"})
    assert s.oidc.scopes == ["openid", "groups"] and s.session.cookie_secure is False
    assert s.max_body_size == 1024


def test_missing_variable_is_a_problem_naming_the_key_path_once() -> None:
    raw = merged({"session": {"cookie_secret": "${COOKIE_SECRET}"}, "oidc": {"scopes": ["openid", "${S}"]}})
    problems = problems_of(raw, {})
    assert ("session.cookie_secret", "environment variable COOKIE_SECRET is not set") in problems
    assert ("oidc.scopes[1]", "environment variable S is not set") in problems
    # the emptied value is not reported a second time (e.g. as too short)
    assert [key for key, _ in problems].count("session.cookie_secret") == 1


def test_dollar_text_that_is_not_a_reference_is_left_alone() -> None:
    raw = merged({"oidc": {"client_id": "pa$$word-$HOME-$", "extra_auth_params": {"x": "$${LITERAL}"}}})
    s = load(raw, {"HOME": "/root", "LITERAL": "no"})
    assert s.oidc.client_id == "pa$$word-$HOME-$"
    assert s.oidc.extra_auth_params == {"x": "${LITERAL}"}  # $${ is the escape for a literal ${


@pytest.mark.parametrize("text", ["${A:default}", "${1A}", "${A", "${}"])
def test_malformed_reference_is_a_problem(text: str) -> None:
    problems = problems_of(merged({"oidc": {"client_id": text}}), {"A": "a"})
    assert_problem(problems, "oidc.client_id", "malformed ${...} reference")


# --- *_file twins ------------------------------------------------------------------------------


def test_secret_files_are_read_and_trailing_newline_stripped(tmp_path: Path) -> None:
    (tmp_path / "client").write_text("file-secret\n")
    (tmp_path / "cookie").write_text(COOKIE_SECRET + "\r\n")
    (tmp_path / "redis").write_text("redis-pw\n")
    raw = merged({"oidc": {"client_secret_file": str(tmp_path / "client")},
                  "session": {"cookie_secret_file": str(tmp_path / "cookie"),
                              "redis_password_file": str(tmp_path / "redis")}})
    del raw["oidc"]["client_secret"], raw["session"]["cookie_secret"]
    s = load(raw)
    assert s.oidc.client_secret is not None and s.oidc.client_secret.get_secret_value() == "file-secret"
    assert s.session.cookie_secret.get_secret_value() == COOKIE_SECRET
    assert s.session.redis_password is not None and s.session.redis_password.get_secret_value() == "redis-pw"


def test_relative_secret_file_resolves_against_the_config_directory(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client").write_text("relative-secret\n")
    text = MINIMAL_YAML.replace('client_secret: "s3cret"', "client_secret_file: secrets/client")
    s = load_settings(write(tmp_path, text), environ={})
    assert s.oidc.client_secret is not None and s.oidc.client_secret.get_secret_value() == "relative-secret"


def test_secret_file_path_is_interpolated(tmp_path: Path) -> None:
    (tmp_path / "client").write_text("via-env\n")
    raw = merged({"oidc": {"client_secret_file": "${SECRETS_DIR}/client"}})
    del raw["oidc"]["client_secret"]
    s = load(raw, {"SECRETS_DIR": str(tmp_path)})
    assert s.oidc.client_secret is not None and s.oidc.client_secret.get_secret_value() == "via-env"


def test_secret_and_its_file_twin_together_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "client").write_text("x")
    problems = problems_of(merged({"oidc": {"client_secret_file": str(tmp_path / "client")}}))
    assert_problem(problems, "oidc.client_secret_file", "either client_secret or client_secret_file")


def test_unreadable_secret_file_names_the_key_once(tmp_path: Path) -> None:
    raw = merged({"session": {"cookie_secret_file": str(tmp_path / "absent")}})
    del raw["session"]["cookie_secret"]
    problems = problems_of(raw)
    assert_problem(problems, "session.cookie_secret_file", "No such file or directory")
    assert not [p for p in problems if p[0] == "session.cookie_secret"]  # not also "is required"


def test_file_twin_exists_only_for_secrets() -> None:
    problems = problems_of(merged({"oidc": {"client_id_file": "/etc/hostname"}}))
    assert_problem(problems, "oidc.client_id_file", "unknown key")


# --- durations ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("8h", 28800), ("1h30m", 5400), ("250ms", 0.25), (90, 90), ("90", 90), (1.5, 1.5),
    ("2d", 172800), ("1.5h", 5400), ("0s", 0), (" 10m ", 600),
])
def test_durations_parse(text: Any, seconds: float) -> None:
    assert math.isclose(parse_duration(text), seconds)


@pytest.mark.parametrize(("text", "reason"), [
    ("5 parsecs", "is not a duration"), ("-5s", "must not be negative"), (-1, "must not be negative"),
    (True, "must be a duration"), ("", "is not a duration"), ("1h 30m", "is not a duration"),
    (float("inf"), "finite"), (None, "must be a duration"), ("10 m", "is not a duration"),
])
def test_bad_durations_are_rejected(text: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(text)


def test_duration_problems_name_the_key() -> None:
    problems = problems_of(merged({"session": {"lifetime": "5 parsecs", "idle_timeout": "0s"},
                                   "oidc": {"clock_skew": "-1s"}}))
    assert_problem(problems, "session.lifetime", "'5 parsecs' is not a duration such as 30s")
    assert_problem(problems, "session.idle_timeout", "must be greater than zero")
    assert_problem(problems, "oidc.clock_skew", "must not be negative")


# --- unknown keys and types --------------------------------------------------------------------


def test_unknown_keys_are_problems_at_every_level() -> None:
    raw = merged({"colour": "blue", "session": {"redis_ulr": "x"},
                  "access": {"bearer": {"audience": ["a"]}}})
    raw["upstreams"][0]["timeout"] = "5s"
    problems = problems_of(raw)
    assert ("colour", "unknown key") in problems
    assert ("session.redis_ulr", "unknown key (did you mean redis_url?)") in problems
    assert ("access.bearer.audience", "unknown key (did you mean audiences?)") in problems
    assert_problem(problems, "upstreams[0].timeout", "unknown key")


def test_non_string_yaml_keys_are_problems(tmp_path: Path) -> None:
    problems = problems_of(merged({"session": {1: "x"}}))
    assert ("session.1", "keys must be strings (quote it in YAML)") in problems


@pytest.mark.parametrize(("overrides", "path", "reason"), [
    ({"oidc": {"pkce": "maybe"}}, "oidc.pkce", "must be true or false"),
    ({"max_body_size": "lots"}, "max_body_size", "must be a whole number"),
    ({"max_body_size": -1}, "max_body_size", "must be at least 0"),
    ({"upstreams": "http://x"}, "upstreams", "must be a list"),
    ({"upstreams": []}, "upstreams", "must not be empty"),
    ({"oidc": "x"}, "oidc", "must be a mapping"),
    ({"oidc": {"client_id": 42}}, "oidc.client_id", "must be a string (quote it in YAML)"),
    ({"oidc": {"client_id": ""}}, "oidc.client_id", "must not be empty"),
    ({"oidc": {"token_endpoint_auth_method": "private_key_jwt"}}, "oidc.token_endpoint_auth_method",
     "must be 'client_secret_basic', 'client_secret_post' or 'none'"),
    ({"session": {"store": "etcd"}}, "session.store", "must be 'redis' or 'memory'"),
    ({"oidc": {"extra_auth_params": {"max_age": 300}}}, "oidc.extra_auth_params.max_age", "must be a string"),
])
def test_type_problems_read_as_plain_english(overrides: dict[str, Any], path: str, reason: str) -> None:
    assert_problem(problems_of(merged(overrides)), path, reason)


def test_required_keys() -> None:
    problems = problems_of({"oidc": {}, "session": {}})
    for path in ("public_url", "oidc.issuer", "oidc.client_id", "session.cookie_secret", "upstreams"):
        assert (path, "is required") in problems


# --- rules -------------------------------------------------------------------------------------

RULES: list[tuple[str, dict[str, Any], str, str]] = [
    ("cookie secret too short", {"session": {"cookie_secret": "x" * 31}},
     "session.cookie_secret", "at least 32 bytes"),
    ("secure cookie on http", {"session": {"cookie_secure": True}},
     "session.cookie_secure", "is not https"),
    ("public_url with a path", {"public_url": "https://gw.example.com/app"},
     "public_url", "must be an origin"),
    ("public_url with a query", {"public_url": "https://gw.example.com/?a=b"},
     "public_url", "must be an origin"),
    ("public_url not http", {"public_url": "ftp://gw.example.com"},
     "public_url", "absolute http:// or https:// URL"),
    ("scopes without openid", {"oidc": {"scopes": ["profile", "email"]}},
     "oidc.scopes", "must contain 'openid'"),
    ("scope with a space", {"oidc": {"scopes": ["openid", "a b"]}},
     "oidc.scopes", "contain no spaces"),
    ("alg none", {"oidc": {"id_token_signing_algs": ["RS256", "none"]}},
     "oidc.id_token_signing_algs", "'none' is never accepted"),
    ("alg None", {"oidc": {"id_token_signing_algs": ["None"]}},
     "oidc.id_token_signing_algs", "'none' is never accepted"),
    ("unknown alg", {"oidc": {"id_token_signing_algs": ["RS1024"]}},
     "oidc.id_token_signing_algs", "unsupported algorithm 'RS1024'"),
    ("empty algs", {"oidc": {"id_token_signing_algs": []}},
     "oidc.id_token_signing_algs", "at least one algorithm"),
    ("public client without pkce", {"oidc": {"token_endpoint_auth_method": "none", "pkce": False}},
     "oidc.pkce", "must stay true for a public client"),
    ("confidential basic client without secret", {"oidc": {"client_secret": None}},
     "oidc.client_secret", "is required with token_endpoint_auth_method client_secret_basic"),
    ("confidential post client without secret",
     {"oidc": {"client_secret": None, "token_endpoint_auth_method": "client_secret_post"}},
     "oidc.client_secret", "is required with token_endpoint_auth_method client_secret_post"),
    ("empty client secret", {"oidc": {"client_secret": ""}},
     "oidc.client_secret", "must not be empty"),
    ("HS256 without secret",
     {"oidc": {"client_secret": None, "token_endpoint_auth_method": "none",
               "id_token_signing_algs": ["HS256"]}},
     "oidc.id_token_signing_algs", "verify with the client_secret"),
    ("discovery off without authorization_endpoint", {"oidc": {"discovery": False}},
     "oidc.authorization_endpoint", "is required when discovery is false"),
    ("discovery off without token_endpoint", {"oidc": {"discovery": False}},
     "oidc.token_endpoint", "is required when discovery is false"),
    ("discovery off without jwks_uri", {"oidc": {"discovery": False}},
     "oidc.jwks_uri", "is required when discovery is false"),
    ("http issuer on a public host", {"oidc": {"issuer": "http://op.example.com"}},
     "oidc.issuer", "must use https"),
    ("issuer with a query", {"oidc": {"issuer": "https://op.example.com/?tenant=a"}},
     "oidc.issuer", "must not have a query or fragment"),
    ("issuer with credentials", {"oidc": {"issuer": "https://user:pw@op.example.com"}},
     "oidc.issuer", "must not contain credentials"),
    ("http token endpoint on a public host",
     {"oidc": {"token_endpoint": "http://op.example.com/token"}},
     "oidc.token_endpoint", "must use https"),
    ("reserved authorization parameter", {"oidc": {"extra_auth_params": {"state": "x", "prompt": "login"}}},
     "oidc.extra_auth_params", "must not set state"),
    ("huge clock skew", {"oidc": {"clock_skew": "11m"}},
     "oidc.clock_skew", "at most 10m"),
    ("redis store without redis_url", {"session": {"redis_url": None}},
     "session.redis_url", "is required when store is redis"),
    ("redis_url not redis", {"session": {"redis_url": "http://127.0.0.1:6379"}},
     "session.redis_url", "redis://, rediss://, unix://, redis+sentinel://"),
    ("empty key_prefix", {"session": {"key_prefix": ""}},
     "session.key_prefix", "must not be empty"),
    ("cookie name with a space", {"session": {"cookie_name": "my cookie"}},
     "session.cookie_name", "letters, digits"),
    ("cookie name colliding with a login cookie", {"session": {"cookie_name": "app_login"}},
     "session.cookie_name", "must not end with '_login'"),
    ("__Host- cookie without Secure", {"session": {"cookie_name": "__Host-gw"}},
     "session.cookie_secure", "must be true"),
    ("__Secure- cookie without Secure", {"session": {"cookie_name": "__Secure-gw"}},
     "session.cookie_secure", "must be true"),
    ("__Host- cookie with a domain",
     {"public_url": "https://gw.example.com", "session": {"cookie_name": "__Host-gw", "cookie_secure": True,
                                                          "cookie_domain": "example.com"}},
     "session.cookie_domain", "__Host-"),
    ("cookie domain with a scheme", {"session": {"cookie_domain": "https://example.com"}},
     "session.cookie_domain", "bare domain"),
    ("cookie domain with a port", {"session": {"cookie_domain": "example.com:443"}},
     "session.cookie_domain", "bare domain"),
    ("cookie domain a TLD", {"session": {"cookie_domain": "com"}},
     "session.cookie_domain", "top-level domain"),
    ("cookie domain not covering public_url",
     {"public_url": "https://gw.example.com",
      "session": {"cookie_domain": "example.org", "cookie_secure": True}},
     "session.cookie_domain", "does not cover the public_url host 'gw.example.com'"),
    ("cookie domain suffix that is not a parent",
     {"public_url": "https://gw.badexample.com", "session": {"cookie_domain": "example.com"}},
     "session.cookie_domain", "does not cover"),
    ("login timeout over an hour", {"session": {"login_timeout": "2h"}},
     "session.login_timeout", "at most 1h"),
    ("zero lifetime", {"session": {"lifetime": 0}},
     "session.lifetime", "greater than zero"),
    ("duplicate upstream paths",
     {"upstreams": [{"path": "/api", "url": "http://127.0.0.1:8080"},
                    {"path": "/api", "url": "http://127.0.0.1:8081"}]},
     "upstreams[1].path", "is already used by upstreams[0]"),
    ("upstream under /oauth2", {"upstreams": [{"path": "/oauth2/", "url": "http://127.0.0.1:8080"}]},
     "upstreams[0].path", "reserved for the gateway's own /oauth2"),
    ("upstream at /oauth2", {"upstreams": [{"path": "/oauth2", "url": "http://127.0.0.1:8080"}]},
     "upstreams[0].path", "reserved"),
    ("upstream below /oauth2", {"upstreams": [{"path": "/oauth2/x/", "url": "http://127.0.0.1:8080"}]},
     "upstreams[0].path", "reserved"),
    ("upstream at /healthz", {"upstreams": [{"path": "/healthz", "url": "http://127.0.0.1:8080"}]},
     "upstreams[0].path", "/healthz"),
    ("upstream at /metrics", {"upstreams": [{"path": "/metrics/", "url": "http://127.0.0.1:8080"}]},
     "upstreams[0].path", "/metrics"),
    ("upstream path without slash", {"upstreams": [{"path": "api", "url": "http://127.0.0.1:8080"}]},
     "upstreams[0].path", "must start with '/'"),
    ("upstream path with a query", {"upstreams": [{"path": "/a?b", "url": "http://127.0.0.1:8080"}]},
     "upstreams[0].path", "plain path prefix"),
    ("upstream url with a query", {"upstreams": [{"path": "/", "url": "http://127.0.0.1:8080/?a=1"}]},
     "upstreams[0].url", "must not have a query"),
    ("upstream url not http", {"upstreams": [{"path": "/", "url": "127.0.0.1:8080"}]},
     "upstreams[0].url", "absolute http:// or https:// URL"),
    ("upstream url with a bad port", {"upstreams": [{"path": "/", "url": "http://127.0.0.1:99999"}]},
     "upstreams[0].url", "invalid port"),
    ("upstream pointing at public_url", {"upstreams": [{"path": "/", "url": "http://127.0.0.1:4180/app"}]},
     "upstreams[0].url", "points at the gateway itself"),
    ("upstream pointing at the wildcard listener",
     {"listen": "0.0.0.0:4180", "public_url": "https://gw.example.com", "session": {"cookie_secure": True},
      "upstreams": [{"path": "/", "url": "http://localhost:4180"}]},
     "upstreams[0].url", "points at the gateway itself"),
    ("bad regex in public_paths", {"access": {"public_paths": ["^/ok/", "^/(unclosed"]}},
     "access.public_paths[1]", "not a valid regular expression"),
    ("email address as allowed domain", {"access": {"allowed_email_domains": ["me@example.com"]}},
     "access.allowed_email_domains[0]", "not an email address"),
    ("empty allowed group", {"access": {"allowed_groups": [""]}},
     "access.allowed_groups[0]", "must not be empty"),
    ("HS256 for bearer tokens", {"access": {"bearer": {"algorithms": ["RS256", "HS256"]}}},
     "access.bearer.algorithms", "'HS256' is not allowed"),
    ("bearer enabled without algorithms", {"access": {"bearer": {"algorithms": []}}},
     "access.bearer.algorithms", "at least one algorithm"),
    ("empty bearer audience", {"access": {"bearer": {"audiences": [""]}}},
     "access.bearer.audiences[0]", "must not be empty"),
    ("bearer without keys",
     {"oidc": {"discovery": False, "id_token_signing_algs": ["HS256"],
               "authorization_endpoint": "https://op.example.com/auth",
               "token_endpoint": "https://op.example.com/token"}},
     "access.bearer.enabled", "oidc.jwks_uri"),
    ("listen without host", {"listen": ":4180"}, "listen", "must be host:port"),
    ("listen without port", {"listen": "127.0.0.1"}, "listen", "must be host:port"),
    ("listen port zero", {"listen": "127.0.0.1:0"}, "listen", "port from 1 to 65535"),
    ("listen port too big", {"listen": "127.0.0.1:65536"}, "listen", "port from 1 to 65535"),
    ("listen port not a number", {"listen": "127.0.0.1:http"}, "listen", "must be host:port"),
    ("listen IPv6 without brackets", {"listen": "::1:4180"}, "listen", "needs brackets"),
    ("listen bad bracketed host", {"listen": "[nope]:4180"}, "listen", "not a bracketed IPv6 address"),
    ("listen host with a slash", {"listen": "http://0.0.0.0:4180"}, "listen", "not a host name"),
]


@pytest.mark.parametrize(("overrides", "path", "reason"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
def test_rule(overrides: dict[str, Any], path: str, reason: str) -> None:
    assert_problem(problems_of(merged(overrides)), path, reason)


@pytest.mark.parametrize("overrides", [
    {"session": {"cookie_secret": "x" * 32}},
    {"public_url": "https://gw.example.com/", "session": {"cookie_secure": True}},
    {"oidc": {"issuer": "http://localhost:9000"}},
    {"oidc": {"issuer": "http://[::1]:9000/realms/x"}},
    {"oidc": {"issuer": "http://127.0.0.2:9000"}},
    {"oidc": {"issuer": "https://op.example.com/realms/x"}},
    {"oidc": {"id_token_signing_algs": ["HS256", "RS256"]}},
    {"oidc": {"discovery": False, "authorization_endpoint": "https://op.example.com/auth",
              "token_endpoint": "https://op.example.com/token", "jwks_uri": "https://op.example.com/jwks"}},
    {"oidc": {"discovery": False, "id_token_signing_algs": ["HS256"],
              "authorization_endpoint": "https://op.example.com/auth",
              "token_endpoint": "https://op.example.com/token"}, "access": {"bearer": {"enabled": False}}},
    {"oidc": {"clock_skew": "10m"}},
    {"session": {"store": "memory", "redis_url": None}},
    {"session": {"redis_url": "unix:///run/redis.sock"}},
    {"session": {"login_timeout": "1h"}},
    {"session": {"cookie_name": "__Host-gw", "cookie_secure": True}, "public_url": "https://gw.example.com"},
    {"session": {"cookie_domain": ".example.com", "cookie_secure": True},
     "public_url": "https://gw.example.com"},
    {"session": {"cookie_domain": "example.com", "cookie_secure": True}, "public_url": "https://example.com"},
    {"session": {"cookie_domain": "localhost"}, "public_url": "http://localhost:4180"},
    {"upstreams": [{"path": "/", "url": "http://127.0.0.1:8080"},
                   {"path": "/api/", "url": "https://api:8443"},
                   {"path": "/oauth", "url": "http://127.0.0.1:8081"}]},
    {"upstreams": [{"path": "/", "url": "http://127.0.0.1:4181"}]},
    {"listen": "[::]:4180", "upstreams": [{"path": "/", "url": "http://[::1]:8080"}]},
    {"listen": "0.0.0.0:80", "upstreams": [{"path": "/", "url": "http://app.internal:80"}]},
    {"access": {"allowed_email_domains": ["example.com", "@example.org"], "allowed_groups": ["admins"]}},
    {"access": {"bearer": {"enabled": False, "algorithms": []}}},
])
def test_rules_are_not_over_broad(overrides: dict[str, Any]) -> None:
    load(merged(overrides))


def test_listen_host_and_port_properties() -> None:
    s = load(merged({"listen": "[::1]:8443"}))
    assert (s.listen_host, s.listen_port) == ("::1", 8443)


def test_public_url_trailing_slash_is_dropped() -> None:
    s = load(merged({"public_url": "http://127.0.0.1:4180/"}))
    assert s.public_url == "http://127.0.0.1:4180"
    assert s.redirect_uri == "http://127.0.0.1:4180/oauth2/callback"


def test_every_problem_is_reported_at_once() -> None:
    raw = merged({
        "listen": "nope",
        "public_url": "http://127.0.0.1:4180/path",
        "oidc": {"scopes": ["profile"], "id_token_signing_algs": ["none"], "extra": 1},
        "session": {"cookie_secret": "short-cookie-secret", "lifetime": "forever"},
        "access": {"public_paths": ["("]},
    })
    raw["upstreams"].append({"path": "/", "url": "http://127.0.0.1:8081"})
    keys = {key for key, _ in problems_of(raw)}
    assert {"listen", "public_url", "oidc.scopes", "oidc.id_token_signing_algs", "oidc.extra",
            "session.cookie_secret", "session.lifetime", "access.public_paths[0]",
            "upstreams[1].path"} <= keys


def test_cross_field_problems_are_reported_alongside_unrelated_field_problems() -> None:
    # A wrong key elsewhere must not hide that the cookie would be dropped or the secret is missing.
    raw = merged({"listen": "nope", "session": {"cookie_secure": True}, "oidc": {"client_secret": None},
                  "upstreams": [{"path": "api", "url": "http://127.0.0.1:8080"}]})
    problems = problems_of(raw)
    assert_problem(problems, "listen", "host:port")
    assert_problem(problems, "upstreams[0].path", "must start with '/'")
    assert_problem(problems, "session.cookie_secure", "is not https")
    assert_problem(problems, "oidc.client_secret", "is required")


def test_config_error_message_lists_key_paths() -> None:
    with pytest.raises(ConfigError) as info:
        load(merged({"listen": "nope", "oidc": {"scopes": ["email"]}}))
    assert "listen: must be host:port" in str(info.value)
    assert "oidc.scopes: must contain 'openid'" in str(info.value)


# --- secrets never appear in problems ----------------------------------------------------------

CLIENT_SECRET = "client-secret-VALUE-4711"
SHORT_COOKIE_SECRET = "cookie-secret-VALUE-0815"
REDIS_PASSWORD = "redis-password-VALUE-42"


def test_no_secret_value_appears_in_any_problem() -> None:
    raw = merged({
        "oidc": {"client_secret": CLIENT_SECRET, "issuer": CLIENT_SECRET, "client_secret_file": "/x"},
        "session": {"cookie_secret": SHORT_COOKIE_SECRET, "redis_password": REDIS_PASSWORD,
                    "lifetime": REDIS_PASSWORD, "cookie_domain": CLIENT_SECRET, "key_prefix": 12},
        "listen": f"{SHORT_COOKIE_SECRET}:x",
        "access": {"public_paths": [f"({CLIENT_SECRET}"]},
    })
    with pytest.raises(ConfigError) as info:
        load(raw)
    text = str(info.value) + repr(info.value.problems)
    assert "session.cookie_secret" in text and "session.lifetime" in text  # the problems are there...
    for secret in (CLIENT_SECRET, SHORT_COOKIE_SECRET, REDIS_PASSWORD):
        assert secret not in text  # ...but never the values


def test_secret_of_the_wrong_type_is_not_echoed() -> None:
    problems = problems_of(merged({"oidc": {"client_secret": 31415926535},
                                   "session": {"cookie_secret": ["list-secret-value-0123456789abcdef"]}}))
    assert ("oidc.client_secret", "must be a string (quote it in YAML)") in problems
    assert ("session.cookie_secret", "must be a string") in problems
    assert "31415926535" not in repr(problems) and "list-secret-value" not in repr(problems)


def test_secrets_are_hidden_in_repr() -> None:
    s = load(merged({"oidc": {"client_secret": CLIENT_SECRET}}))
    assert CLIENT_SECRET not in repr(s) and COOKIE_SECRET not in repr(s)


# --- files and YAML ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "reason"), [
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("- a\n- b\n", "must be a YAML mapping of key: value, not a list"),
    ("just text\n", "not a str"),
])
def test_empty_or_non_mapping_yaml(tmp_path: Path, text: str, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert_problem(info.value.problems, str(path), reason)


def test_yaml_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'listen: "127.0.0.1:4180"\noidc:\n  issuer: [unclosed\n  client_id: x\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    ((key, reason),) = info.value.problems
    assert key == str(path)
    assert reason.startswith("invalid YAML at line 4, column")


def test_duplicate_yaml_keys_are_problems(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace('  client_id: "gateway"\n', '  client_id: "gateway"\n  client_id: "other"\n')
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert info.value.problems == [(str(path), "duplicate key 'client_id' at line 6, column 3")]


def test_yaml_merge_keys_are_not_duplicates(tmp_path: Path) -> None:
    text = MINIMAL_YAML.replace("upstreams:\n  - path: /\n", "upstreams:\n  - &up\n    path: /\n") + (
        "  - <<: *up\n    path: /api/\n")
    s = load_settings(write(tmp_path, text), environ={})
    assert [u.path for u in s.upstreams] == ["/", "/api/"]


def test_missing_file_and_directory_are_clear_problems(tmp_path: Path) -> None:
    for path, reason in ((tmp_path / "absent.yaml", "No such file"), (tmp_path, "Is a directory")):
        with pytest.raises(ConfigError) as info:
            load_settings(path, environ={})
        assert_problem(info.value.problems, str(path), f"cannot read the file: {reason}")


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"listen: \xff\xfe\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    assert_problem(info.value.problems, str(path), "not UTF-8")


def test_settings_from_mapping_rejects_non_mappings() -> None:
    assert problems_of(["a"]) == [("(top level)", "the configuration must be a YAML mapping of key: value")]


# --- config.example.yaml -----------------------------------------------------------------------

EXAMPLE = REPO / "config.example.yaml"


def test_example_config_is_valid_as_shipped() -> None:
    s = load_settings(EXAMPLE, environ={})
    assert s.oidc.client_secret is not None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is dict:  # a mapping's keys are data (claim names), not settings keys
        return None
    return next((m for m in map(_model_of, get_args(annotation)) if m is not None), None)


def _missing_keys(model: type[BaseModel], node: Any, path: str) -> list[str]:
    """Every field of `model` (recursively) that is not a key at its place in the parsed example."""
    nodes = node if isinstance(node, list) else [node]
    present = {key for item in nodes if isinstance(item, dict) for key in item}
    missing = [f"{path}{name}" for name in model.model_fields if name not in present]
    for name, field in model.model_fields.items():
        sub = _model_of(field.annotation)
        if sub is not None and name in present:
            children = [item[name] for item in nodes if isinstance(item, dict) and name in item]
            flat = [c for child in children for c in (child if isinstance(child, list) else [child])]
            missing += _missing_keys(sub, flat, f"{path}{name}.")
    return missing


def test_key_walk_finds_missing_nested_keys() -> None:
    missing = _missing_keys(Settings, minimal(), "")
    assert {"log_level", "oidc.pkce", "session.lifetime", "upstreams.websockets", "access"} <= set(missing)


def test_example_config_documents_every_settings_key() -> None:
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert _missing_keys(Settings, raw, "") == []


def test_example_config_mentions_every_file_twin() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for twin in ("client_secret_file", "cookie_secret_file", "redis_password_file"):
        assert f"{twin}:" in text
