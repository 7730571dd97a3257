"""Return-path (`rd`) sanitising: the only place that decides where a browser goes after login/logout.

Trusts nothing in `rd`. Accepts only a same-origin, absolute-path reference: one leading `/`, not
followed by `/` or `\\` (protocol-relative `//host` and `/\\host`, which browsers treat alike), no
scheme or authority, no control characters or whitespace (browsers strip tabs and newlines, turning
`/\\t/evil` into `//evil`), no backslash anywhere, printable ASCII only, at most 2048 characters.
Anything else becomes "/". (oauth2-proxy and mod_auth_openidc fall back the same way.)

One exception, for forward-auth set-ups where the login returns to another host: an absolute
`http(s)://host[:port]/...` URL whose host is in `redirect_domains` (`app.example.com` exactly, or
`.example.com`: that domain and any subdomain). It passes the same character checks (printable
ASCII, no backslash), must have the literal `scheme://` form, no userinfo (`user@host`), a host of
DNS labels only (no IPv6 literal, no percent-encoding, no trailing dot) and a numeric port if any;
the authority is re-assembled from the parsed host and port and must equal the original, so a URL
that parsers could read two ways is refused. Matching is on whole labels:
`allowed.example.com.attacker.net` does not match `.example.com`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = ["safe_return_path"]

_MAX_LENGTH = 2048
_HOST = re.compile(r"(?:(?!-)[a-z0-9-]{1,63}(?<!-)\.)*(?!-)[a-z0-9-]{1,63}(?<!-)")


def _host_allowed(host: str, domains: Sequence[str]) -> bool:
    for domain in domains:
        domain = domain.lower()
        if domain.startswith("."):
            if host == domain[1:] or host.endswith(domain):
                return True
        elif host == domain:
            return True
    return False


def _allowed_absolute(rd: str, domains: Sequence[str]) -> bool:
    try:
        parts = urlsplit(rd)
    except ValueError:  # "http://[": an unbalanced IPv6 bracket is refused, not a 500
        return False
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not rd.lower().startswith(f"{scheme}://"):
        return False
    authority = parts.netloc.lower()
    if not authority or "@" in authority or "%" in authority:
        return False
    host, sep, port = authority.partition(":")
    if not _HOST.fullmatch(host) or (sep and not (port.isdigit() and 0 < int(port) < 65536)):
        return False
    if parts.hostname != host or f"{host}{sep}{port}" != authority:
        return False
    return _host_allowed(host, domains)


def safe_return_path(rd: str | None, redirect_domains: Sequence[str] = ()) -> str:
    if not rd or len(rd) > _MAX_LENGTH:
        return "/"
    if any(not 0x21 <= ord(c) <= 0x7E for c in rd) or "\\" in rd:
        return "/"
    if redirect_domains and not rd.startswith("/"):
        return rd if _allowed_absolute(rd, redirect_domains) else "/"
    if not rd.startswith("/") or rd.startswith("//"):
        return "/"
    parts = urlsplit(rd)
    if parts.scheme or parts.netloc:
        return "/"
    return rd
