"""Return-path (`rd`) sanitising: the only place that decides where a browser goes after login/logout.

Trusts nothing in `rd`. Accepts only a same-origin, absolute-path reference: one leading `/`, not
followed by `/` or `\\` (protocol-relative `//host` and `/\\host`, which browsers treat alike), no
scheme or authority, no control characters or whitespace (browsers strip tabs and newlines, turning
`/\\t/evil` into `//evil`), no backslash anywhere, printable ASCII only, at most 2048 characters.
Anything else becomes "/". (oauth2-proxy and mod_auth_openidc fall back the same way.)
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["safe_return_path"]

_MAX_LENGTH = 2048


def safe_return_path(rd: str | None) -> str:
    if not rd or len(rd) > _MAX_LENGTH:
        return "/"
    if any(not 0x21 <= ord(c) <= 0x7E for c in rd) or "\\" in rd:
        return "/"
    if not rd.startswith("/") or rd.startswith("//"):
        return "/"
    parts = urlsplit(rd)
    if parts.scheme or parts.netloc:
        return "/"
    return rd
