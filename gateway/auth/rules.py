"""Per-route access rules (`access.rules`): path regex + methods → who may pass.

Trusts the verified Identity's claims and nothing else. Rules are compiled once. The first rule whose
`path` regex (searched, like public_paths: anchor it) and method match the request applies; later rules
are not consulted. An empty `methods` matches every method, and a rule for GET also covers HEAD (a HEAD
is a GET without the body, RFC 9110 §9.3.2), so HEAD cannot slip past a GET rule. A matching rule
restricts in addition to the global settings; every list it sets must be satisfied (AND across keys,
OR within a list): `allowed_emails` (case-insensitive, never an email whose `email_verified` is
false), `allowed_email_domains`, `allowed_groups` (the `groups` claim), `required_claims` (a scalar
equals the claim or one element of a list claim; `{regex: ...}` must fullmatch it), `required_scopes`
(all of them, from the space-separated `scope` claim or the `scp` list, RFC 9068 §2.2.3). A failed
rule raises Forbidden (403).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.auth.identity import Identity
from gateway.config import ClaimRegex, RuleSettings
from gateway.errors import Forbidden

__all__ = ["Rule", "compile_rules", "email_domain_allowed", "first_match", "scopes_of"]


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The token's scopes: `scope` (space-separated string, RFC 8693 §4.2) or `scp` (list or string)."""
    out: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        out.update(scope.split())
    scp = claims.get("scp")
    if isinstance(scp, str):
        out.update(scp.split())
    elif isinstance(scp, list):
        out.update(s for s in scp if isinstance(s, str))
    return frozenset(out)


def _verified_email(identity: Identity) -> str | None:
    if identity.claims.get("email_verified") is False or not identity.email:
        return None
    return identity.email.lower()


def email_domain_allowed(identity: Identity, domains: frozenset[str]) -> bool:
    email = _verified_email(identity) or ""
    return "@" in email and email.rpartition("@")[2] in domains


def _matches(value: Any, expected: str | int | bool | re.Pattern[str]) -> bool:
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(expected, re.Pattern):
            if isinstance(item, str | int) and not isinstance(item, bool) and expected.fullmatch(str(item)):
                return True
        elif type(item) is type(expected) and item == expected:  # True never equals 1 here
            return True
    return False


@dataclass(frozen=True, slots=True)
class Rule:
    path: re.Pattern[str]
    methods: frozenset[str]
    public: bool
    emails: frozenset[str]
    domains: frozenset[str]
    groups: frozenset[str]
    claims: tuple[tuple[str, str | int | bool | re.Pattern[str]], ...]
    scopes: frozenset[str]

    def applies(self, method: str, path: str) -> bool:
        if self.methods and method not in self.methods and not (method == "HEAD" and "GET" in self.methods):
            return False
        return self.path.search(path) is not None

    def check(self, identity: Identity) -> None:
        if self.emails and _verified_email(identity) not in self.emails:
            raise Forbidden()
        if self.domains and not email_domain_allowed(identity, self.domains):
            raise Forbidden()
        if self.groups and not self.groups.intersection(identity.groups):
            raise Forbidden()
        for name, expected in self.claims:
            if name not in identity.claims or not _matches(identity.claims[name], expected):
                raise Forbidden()
        if self.scopes and not self.scopes <= scopes_of(identity.claims):
            raise Forbidden()


def _rule(settings: RuleSettings) -> Rule:
    claims = tuple((name, re.compile(want.regex) if isinstance(want, ClaimRegex) else want)
                   for name, want in settings.required_claims.items())
    return Rule(path=re.compile(settings.path), methods=frozenset(settings.methods), public=settings.public,
                emails=frozenset(e.lower() for e in settings.allowed_emails),
                domains=frozenset(d.lower().lstrip("@") for d in settings.allowed_email_domains),
                groups=frozenset(settings.allowed_groups), claims=claims,
                scopes=frozenset(settings.required_scopes))


def compile_rules(settings: Sequence[RuleSettings]) -> tuple[Rule, ...]:
    return tuple(_rule(s) for s in settings)


def first_match(rules: Sequence[Rule], method: str, path: str) -> Rule | None:
    for rule in rules:  # a loop, not next(<generator>): twice per proxied request
        if rule.applies(method, path):
            return rule
    return None
