"""Request ids: one per request (set by gateway.web.errors.gateway_middleware), shown on every page and
sent upstream as X-Request-Id.

Trusts a client's X-Request-Id only when it is exactly one header whose value is a sane token:
1-128 characters of `A-Z a-z 0-9 . _ -` (so it can't inject markup, log lines or header syntax).
Anything else, and no header, gets a fresh random id (128 bits, hex). The id is stored in
`request[REQUEST_ID]` before anything else runs; the forwarder sends it upstream and the
error pages and JSON show it, so a user can quote it and an operator can find the request.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence

from aiohttp import web

from gateway.proxy.headers import REQUEST_ID

__all__ = ["REQUEST_ID", "RequestIds", "new_request_id", "request_id_of", "sane_request_id"]

HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._-]{1,128}")


def new_request_id() -> str:
    return secrets.token_hex(16)


class RequestIds:
    """new_request_id() for the hot path: the same 128 random bits (os.urandom) in hex, but drawn from the
    kernel `batch` ids at a time, one getrandom call instead of one per request."""

    __slots__ = ("_batch", "_hex", "_next")

    def __init__(self, batch: int = 256) -> None:
        self._batch = batch
        self._hex = ""
        self._next = 0

    def __call__(self) -> str:
        start = self._next
        if start >= len(self._hex):
            self._hex = os.urandom(16 * self._batch).hex()
            start = 0
        self._next = start + 32
        return self._hex[start:start + 32]


def sane_request_id(values: Sequence[str]) -> str | None:
    """The client's id when it sent exactly one sane X-Request-Id, else None."""
    if len(values) == 1 and _SANE.fullmatch(values[0]):
        return values[0]
    return None


def request_id_of(request: web.Request) -> str:
    """This request's id; a fresh one (remembered) when the middleware did not run."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        rid = request[REQUEST_ID] = new_request_id()
    return rid
