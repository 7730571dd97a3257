"""Identity: who the request is, as verified by an authenticator. Read by the policy and the proxy."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["IDENTITY", "Identity"]


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(str(v) for v in value if isinstance(v, str | int))
    return ()


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True)
class Identity:
    sub: str
    email: str | None = None
    username: str | None = None
    groups: tuple[str, ...] = ()
    access_token: str | None = field(default=None, repr=False)  # never in logs or tracebacks
    id_token: str | None = field(default=None, repr=False)  # the session's raw ID token, when there is one
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], access_token: str | None = None,
                    id_token: str | None = None) -> Identity:
        return cls(
            sub=str(claims["sub"]),
            email=_opt_str(claims.get("email")),
            username=_opt_str(claims.get("preferred_username")),
            groups=_groups(claims.get("groups")),
            access_token=access_token,
            id_token=id_token,
            claims=dict(claims),
        )


IDENTITY = web.RequestKey("identity", Identity)
