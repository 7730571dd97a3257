"""Signed cookies: the session cookie and the login-binding cookie.

The value is `<random id>.<HMAC-SHA256(key, name|id)>`: an opaque, unguessable id (256 bits) that
only this gateway can mint. The MAC covers the cookie name, so one cookie's value cannot be replayed
as another's. Anything that does not verify reads as "no cookie" (a tampered cookie is simply not
logged in). The session cookie is HttpOnly, Secure unless configured off, SameSite=Lax, Path=/.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Literal

from aiohttp import web

__all__ = ["SignedCookie", "derive_key"]


_VERIFIED_CACHE_SIZE = 10_000


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A separate key per purpose, derived from the configured cookie_secret."""
    return hmac.new(secret, f"oidc-gateway/{purpose}/v1".encode(), hashlib.sha256).digest()


class SignedCookie:
    def __init__(self, name: str, key: bytes, *, secure: bool, max_age: float, path: str = "/",
                 domain: str | None = None, samesite: Literal["Lax", "Strict", "None"] | None = "Lax") -> None:
        self.name = name
        self._key = key
        self._secure = secure
        self._max_age = int(max_age)
        self._path = path
        self._domain = domain
        self._samesite = samesite
        # Values whose MAC verified, value -> id: a repeated cookie costs a dict lookup, not an HMAC.
        # Verification is a pure function of the value and the key, so remembering it changes no
        # answer; whether the id still names a live session is the store's question, asked every time.
        self._verified: dict[str, str] = {}

    def _mac(self, ident: str) -> str:
        mac = hmac.new(self._key, f"{self.name}|{ident}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(32)

    def encode(self, ident: str) -> str:
        return f"{ident}.{self._mac(ident)}"

    def decode(self, value: str | None) -> str | None:
        if not value or len(value) > 256:
            return None
        known = self._verified.get(value)
        if known is not None:
            return known
        ident, sep, mac = value.rpartition(".")
        if not sep or not ident or not hmac.compare_digest(mac, self._mac(ident)):
            return None  # failures are not remembered: the cache holds only values this gateway minted
        if len(self._verified) >= _VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # oldest first
        self._verified[value] = ident
        return ident

    def read(self, request: web.Request) -> str | None:
        """The id of the first cookie of this name whose signature verifies (a browser may send several
        of one name, from other paths or domains). Parses only our own cookie: the hot path."""
        header = request.headers.get("Cookie")
        if not header or self.name not in header:
            return None
        for part in header.split(";"):
            name, sep, value = part.partition("=")
            if sep and name.strip() == self.name:
                ident = self.decode(value.strip())
                if ident is not None:
                    return ident
        return None

    def set(self, response: web.StreamResponse, ident: str) -> None:
        response.set_cookie(self.name, self.encode(ident), max_age=self._max_age, path=self._path,
                            domain=self._domain, secure=self._secure, httponly=True, samesite=self._samesite)

    def clear(self, response: web.StreamResponse) -> None:
        response.del_cookie(self.name, path=self._path, domain=self._domain, secure=self._secure,
                            httponly=True, samesite=self._samesite)
