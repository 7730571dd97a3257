"""Session and PendingLogin records and their JSON (de)serialisation. Pure values, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from gateway.oidc.client import AuthRequest

__all__ = ["PendingLogin", "Session"]

# ID-token claims that describe the token, not the user: not kept as identity claims.
_TECHNICAL_CLAIMS = frozenset({"aud", "exp", "iat", "nbf", "nonce", "at_hash", "c_hash", "azp", "auth_time",
                               "jti", "acr", "amr", "sid", "s_hash"})


@dataclass(frozen=True, slots=True)
class Session:
    sub: str
    iss: str
    created_at: float
    last_seen: float
    claims: dict[str, Any] = field(default_factory=dict)
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None  # of the access token
    op_sid: str | None = None  # the OP's `sid` claim, for back-channel logout

    @staticmethod
    def identity_claims(*claim_sets: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for claims in claim_sets:
            merged.update({k: v for k, v in claims.items() if k not in _TECHNICAL_CLAIMS})
        return merged

    def ttl(self, now: float, *, lifetime: float, idle_timeout: float) -> float:
        """Seconds this session may still live: the earlier of the absolute and the idle limit."""
        return min(self.created_at + lifetime - now, self.last_seen + idle_timeout - now)

    def dumps(self) -> bytes:
        # The fields in declaration order, as asdict() gave them, without its deep copy of the claims
        # (~30 us per write): the same bytes, which the store's compare-and-set relies on.
        return json.dumps({name: getattr(self, name) for name in _SESSION_FIELDS}, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes | str) -> Session:
        return cls(**json.loads(raw))


_SESSION_FIELDS = tuple(f.name for f in fields(Session))
_AUTH_REQUEST_FIELDS = tuple(f.name for f in fields(AuthRequest))


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """A login in progress, stored under its `state` until the callback consumes it once."""

    request: AuthRequest
    binding: str  # SHA-256 hex of the browser-binding cookie value that started this login
    created_at: float
    # A form POST that arrived without a session (upstreams[].preserve_post): its fields, replayed to
    # `request.rd` after the login. None: a plain login. May hold user input: repr=False, never logged.
    form: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)

    def dumps(self) -> bytes:
        # The request's fields in declaration order, as asdict() gave them, without its recursive copy.
        request = {name: getattr(self.request, name) for name in _AUTH_REQUEST_FIELDS}
        data: dict[str, Any] = {"request": request, "binding": self.binding,
                                "created_at": self.created_at}
        if self.form is not None:
            data["form"] = [list(pair) for pair in self.form]
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def loads(cls, raw: bytes | str) -> PendingLogin:
        data = json.loads(raw)
        form = data.get("form")  # absent in records written before preserve_post existed
        return cls(request=AuthRequest(**data["request"]), binding=data["binding"], created_at=data["created_at"],
                   form=None if form is None else tuple((str(name), str(value)) for name, value in form))
