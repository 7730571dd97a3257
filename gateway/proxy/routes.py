"""UpstreamTable: which upstream serves a request path (longest `upstreams[].path` prefix wins).

A prefix matches on path-segment boundaries: `/api` matches `/api`, `/api/` and `/api/x`, never
`/apix`; a prefix that ends with `/` (including `/` itself) matches by plain `startswith`. Matching
runs on the decoded request path, the same view the access policy and aiohttp's router use. The
path is forwarded as the client sent it (raw, not re-encoded, no prefix stripping), appended to the
upstream URL's own path; the raw query string is kept verbatim.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from yarl import URL

from gateway.config import UpstreamSettings
from gateway.proxy.upstream import Target

__all__ = ["Route", "UpstreamTable"]


@dataclass(frozen=True, slots=True)
class Route:
    """One upstream, with everything the forwarder needs precomputed."""

    upstream: UpstreamSettings
    base_url: URL  # the upstream URL without a trailing slash, e.g. http://h:1/base
    timeout: aiohttp.ClientTimeout
    lean: Target | None  # how gateway.proxy.upstream reaches a plain-http upstream; None: aiohttp only
    _prefix: str = field(repr=False, compare=False)  # str(base_url), for cheap joining

    @classmethod
    def from_settings(cls, upstream: UpstreamSettings) -> Route:
        url = URL(upstream.url)
        base = url.with_path(url.raw_path.rstrip("/"), encoded=True)
        return cls(
            upstream=upstream,
            base_url=base,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=upstream.connect_timeout,
                                          sock_read=upstream.read_timeout),
            lean=Target.for_url(base),
            _prefix=str(base).rstrip("/"),
        )

    def url_for(self, raw_path: str, raw_query: str = "") -> URL:
        """The upstream URL for a request's raw path (starting with `/`) and raw query string.

        Neither is decoded or re-encoded: the upstream sees the bytes the client sent.
        """
        target = self._prefix + raw_path
        if raw_query:
            target = target + "?" + raw_query
        return URL(target, encoded=True)


class UpstreamTable:
    """Longest-prefix lookup over the configured upstreams, precomputed at construction."""

    __slots__ = ("_entries",)

    def __init__(self, upstreams: Sequence[UpstreamSettings]) -> None:
        # Longest prefix first, so the first hit is the answer. Tables are small (one entry per
        # configured upstream); a scan of `startswith` calls beats a per-request segment walk.
        ordered = sorted(upstreams, key=lambda up: len(up.path), reverse=True)
        self._entries: tuple[tuple[str, int, bool, Route], ...] = tuple(
            (up.path, len(up.path), not up.path.endswith("/"), Route.from_settings(up)) for up in ordered
        )

    def match(self, path: str) -> Route | None:
        """The route whose prefix matches `path` longest, or None."""
        for prefix, size, needs_boundary, route in self._entries:
            if path.startswith(prefix) and (
                not needs_boundary or len(path) == size or path[size] == "/"
            ):
                return route
        return None

    def preserve_post_limit(self, path: str) -> int:
        """The preserve_post_max_size of the upstream serving `path`; 0 when it doesn't preserve POSTs."""
        route = self.match(path)
        if route is None or not route.upstream.preserve_post:
            return 0
        return route.upstream.preserve_post_max_size
