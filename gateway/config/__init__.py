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

Layout: `values` (durations, URL/host checks, annotated field types), `redis_url` (Redis URLs: one
node, Sentinel, Cluster, TLS, ACL; pure parsing), `models` (one model per YAML
section), `settings` (the root Settings and the rules that span sections), `loading` (YAML, `${ENV}`,
`*_file`, pydantic errors → (key path, reason), settings_from_mapping, load_settings).
"""

from __future__ import annotations

from gateway.config.loading import Problems as Problems
from gateway.config.loading import load_settings, settings_from_mapping
from gateway.config.models import (
    AccessSettings,
    BearerSettings,
    ClaimRegex,
    HeaderSettings,
    IdentityAssertionSettings,
    OIDCSettings,
    RuleSettings,
    SessionSettings,
    TrustedIssuerSettings,
    UpstreamSettings,
)
from gateway.config.settings import Settings
from gateway.config.values import Duration as Duration
from gateway.config.values import HttpUrl as HttpUrl
from gateway.config.values import NonEmptyStr as NonEmptyStr
from gateway.config.values import OPUrl as OPUrl
from gateway.config.values import PositiveDuration as PositiveDuration
from gateway.config.values import parse_duration

# The public API, unchanged by the split into a package. The annotated field types and Problems stay
# importable from here too (the `X as X` imports above), as they were from the old module.
__all__ = [
    "AccessSettings",
    "BearerSettings",
    "ClaimRegex",
    "HeaderSettings",
    "IdentityAssertionSettings",
    "OIDCSettings",
    "RuleSettings",
    "SessionSettings",
    "Settings",
    "TrustedIssuerSettings",
    "UpstreamSettings",
    "load_settings",
    "parse_duration",
    "settings_from_mapping",
]
