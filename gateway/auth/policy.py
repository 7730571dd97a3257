"""AccessPolicy: which paths need no authentication, and which identities may pass.

Public paths are regexes on the request path (`access.public_paths`), searched, so anchor them
(`^/public/`); a path with `.`/`..` segments is never public (no `/public/../admin` bypass). An
identity passes when its email's domain is in `allowed_email_domains` (compared case-insensitively;
an email whose `email_verified` is false never counts) and it is in one of `allowed_groups`; an
empty list allows anyone. A denial raises Forbidden (403).
"""

from __future__ import annotations

import re

from gateway.auth.identity import Identity
from gateway.config import AccessSettings
from gateway.errors import Forbidden

__all__ = ["AccessPolicy", "has_dot_segment"]


def has_dot_segment(path: str) -> bool:
    """True when a path segment is `.` or `..` (`..;x` too: servlet containers drop `;params` first)."""
    if "." not in path:
        return False
    return any(segment.partition(";")[0] in (".", "..") for segment in path.split("/"))


class AccessPolicy:
    def __init__(self, settings: AccessSettings) -> None:
        self._public = [re.compile(p) for p in settings.public_paths]
        self._domains = frozenset(d.lower().lstrip("@") for d in settings.allowed_email_domains)
        self._groups = frozenset(settings.allowed_groups)

    def is_public(self, path: str) -> bool:
        # `/public/../admin` must not pass as public: a path with dot segments is never public.
        if has_dot_segment(path):
            return False
        return any(p.search(path) for p in self._public)

    def check(self, identity: Identity) -> None:
        if self._domains:
            email = identity.email or ""
            domain = email.rpartition("@")[2].lower() if "@" in email else ""
            if identity.claims.get("email_verified") is False or domain not in self._domains:
                raise Forbidden()
        if self._groups and not self._groups.intersection(identity.groups):
            raise Forbidden()
