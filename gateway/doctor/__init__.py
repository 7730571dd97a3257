"""`oidc-gateway doctor --config FILE`: check a configuration against the world it will meet.

check-config proves the file is well-formed without touching the network; doctor then asks the
OpenID Provider, Redis and every upstream what the gateway will ask them, and reports each thing
operators commonly get wrong with the fix: the issuer not matching discovery exactly, algorithms,
client authentication, response type or mode the OP does not offer, no JWKS key for an allowed
algorithm, this host's clock against the OP's `Date` header, client credentials the token endpoint
refuses, a redirect_uri the OP has not registered, Redis unreachable, slow or read-only, and
upstreams that do not answer. It changes nothing anywhere, except one short-lived Redis key under
the configured prefix (written and deleted to prove the store is writable).

Output: one line per finding (`ok`, `info`, `WARN`, `FAIL`), each problem followed by `fix:`.
Exit status: 0 when nothing failed (warnings included), 1 when at least one check failed.
Secrets are never printed: URLs are shown without credentials, secrets not at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import aiohttp

from gateway.config import Settings
from gateway.doctor.findings import Finding
from gateway.doctor.infra import check_store, check_upstreams
from gateway.doctor.provider import check_provider

__all__ = ["Finding", "diagnose", "exit_code", "render", "run_doctor"]

_MARK = {"ok": "ok  ", "info": "info", "warn": "WARN", "fail": "FAIL"}


async def diagnose(settings: Settings, *, clock: Callable[[], float] = time.time,
                   timeout: float | None = None) -> list[Finding]:
    """Every finding, in order: the OP, the session store, the upstreams."""
    limit = timeout if timeout is not None else min(settings.oidc.http_timeout, 10.0)
    client_timeout = aiohttp.ClientTimeout(total=limit)
    # As the gateway itself: no cookies kept, no proxy from the environment, redirects not followed.
    async with aiohttp.ClientSession(timeout=client_timeout, cookie_jar=aiohttp.DummyCookieJar(),
                                     headers={"User-Agent": "oidc-gateway doctor"}) as http:
        findings = await check_provider(http, settings, clock=clock)
        findings += await check_store(settings, timeout=limit)
        findings += await check_upstreams(http, settings)
    return findings


def render(findings: Sequence[Finding]) -> str:
    width = max((len(f.check) for f in findings), default=0)
    lines = []
    for finding in findings:
        lines.append(f"{_MARK[finding.status]}  {finding.check.ljust(width)}  {finding.message}")
        if finding.fix and finding.status in ("warn", "fail"):
            lines.append(f"      {''.ljust(width)}  fix: {finding.fix}")
    counts = {status: sum(f.status == status for f in findings) for status in _MARK}
    lines.append(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} problem(s)")
    return "\n".join(lines)


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.status == "fail" for f in findings) else 0


def run_doctor(settings: Settings) -> int:
    """Run every check, print the report to stdout, return the exit status."""
    findings = asyncio.run(diagnose(settings))
    print(render(findings))
    return exit_code(findings)
