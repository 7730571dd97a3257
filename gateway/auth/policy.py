"""AccessPolicy: which paths need no authentication, and which identities may pass.

Public paths are regexes on the request path (`access.public_paths`), searched, so anchor them
(`^/public/`); a path with `.`/`..` segments is never public (no `/public/../admin` bypass). An
identity passes when its email's domain is in `allowed_email_domains` (compared case-insensitively;
an email whose `email_verified` is false never counts) and it is in one of `allowed_groups`; an
empty list allows anyone. Then the first matching `access.rules` entry (gateway.auth.rules) applies
on top: a public rule makes the path public (as does a public_paths match, which rules cannot undo),
any other rule adds its own requirements. Rules match the path with dot segments resolved, so
`/x/../admin` meets the `^/admin` rule. A denial raises Forbidden (403).
"""

from __future__ import annotations

import re

from gateway.auth.identity import Identity
from gateway.auth.rules import compile_rules, email_domain_allowed, first_match
from gateway.config import AccessSettings
from gateway.errors import Forbidden

__all__ = ["AccessPolicy", "has_dot_segment", "resolve_dot_segments"]


def has_dot_segment(path: str) -> bool:
    """True when a path segment is `.` or `..` (`..;x` too: servlet containers drop `;params` first)."""
    # Such a segment starts the path or follows a slash: most paths with a dot (/app.js) stop here.
    if "/." not in path and not path.startswith("."):
        return False
    return any(segment.partition(";")[0] in (".", "..") for segment in path.split("/"))


def resolve_dot_segments(path: str) -> str:
    """`path` with `.` and `..` segments removed as RFC 3986 §5.2.4 does (`;params` count, as above)."""
    if not has_dot_segment(path):
        return path
    out: list[str] = []
    for segment in path.split("/")[1:]:
        bare = segment.partition(";")[0]
        if bare == "..":
            if out:
                out.pop()
        elif bare != ".":
            out.append(segment)
    return "/" + "/".join(out)


class AccessPolicy:
    def __init__(self, settings: AccessSettings) -> None:
        self._public = [re.compile(p) for p in settings.public_paths]
        self._domains = frozenset(d.lower().lstrip("@") for d in settings.allowed_email_domains)
        self._groups = frozenset(settings.allowed_groups)
        self._rules = compile_rules(settings.rules)

    def is_public(self, path: str, method: str = "GET") -> bool:
        # `/public/../admin` must not pass as public: a path with dot segments is never public.
        if has_dot_segment(path):
            return False
        for pattern in self._public:  # a loop, not any(<generator>): once per proxied request
            if pattern.search(path):
                return True
        rule = first_match(self._rules, method, path)
        return rule is not None and rule.public

    def check(self, identity: Identity, method: str = "GET", path: str | None = None) -> None:
        if self._domains and not email_domain_allowed(identity, self._domains):
            raise Forbidden()
        if self._groups and not self._groups.intersection(identity.groups):
            raise Forbidden()
        if path is not None and self._rules:
            rule = first_match(self._rules, method, resolve_dot_segments(path))
            if rule is not None and not rule.public:
                rule.check(identity)
