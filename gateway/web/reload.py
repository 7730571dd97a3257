"""SIGHUP: re-read the configuration file and swap routes, access rules and upstreams while serving.

What a reload changes: `upstreams` (routes and their URLs and timeouts), the access rules
(`access.public_paths`, `allowed_email_domains`, `allowed_groups`, `rules`), the identity `headers`,
`max_body_size` and `log_level`.
gateway.app rebuilds the forwarder, the access policy and the handlers that use it, and puts them
into the running Components in one synchronous step: a request already being forwarded finishes
with the objects it started with, the next one uses the new ones, and no connection is closed.

What it refuses: a file that does not load or validate keeps the running configuration in force,
and the problems are logged (ERROR). Every other key (the OP, client, session store, cookies,
listen address, bearer settings, workers, ...) needs a restart: a change to one of them is logged
(WARNING) by name, never by value, and the running value is kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.config import Settings, load_settings
from gateway.errors import ConfigError
from gateway.web.observability import Metrics

__all__ = ["RELOADABLE", "LiveConfig", "reload_config", "restart_required"]

log = logging.getLogger(__name__)

RELOADABLE = frozenset({"upstreams", "access", "headers", "max_body_size", "log_level"})
# The token verifier and the login flow (which reads redirect_domains) are built once, at start-up.
_ACCESS_NEEDS_RESTART = frozenset({"bearer", "redirect_domains"})


@dataclass(slots=True)
class LiveConfig:
    """The settings in force, the file they came from, and how to rebuild the routing (set by gateway.app)."""

    settings: Settings
    path: Path | None = None
    rebuild: Callable[[Settings], None] | None = None


def restart_required(old: Settings, new: Settings) -> list[str]:
    """The keys whose change a reload cannot apply, e.g. ["oidc", "access.bearer"]."""
    keys = [name for name in Settings.model_fields if name not in RELOADABLE
            and getattr(old, name) != getattr(new, name)]
    keys += [f"access.{name}" for name in sorted(_ACCESS_NEEDS_RESTART)
             if getattr(old.access, name) != getattr(new.access, name)]
    return keys


def _effective(old: Settings, new: Settings) -> Settings:
    """`new`'s reloadable parts on top of `old` (both validated, so no validation is skipped)."""
    access = new.access.model_copy(update={name: getattr(old.access, name) for name in _ACCESS_NEEDS_RESTART})
    return old.model_copy(update={"upstreams": new.upstreams, "access": access, "headers": new.headers,
                                  "max_body_size": new.max_body_size, "log_level": new.log_level})


def reload_config(live: LiveConfig, metrics: Metrics) -> bool:
    """Apply the configuration file's reloadable parts; False (and the old configuration) when it is invalid."""
    if live.path is None or live.rebuild is None:
        log.warning("SIGHUP ignored: the gateway was not started from a configuration file")
        return False
    try:
        new = load_settings(live.path)
    except ConfigError as exc:
        metrics.record_reload(False)
        log.error("configuration reload rejected, the running configuration stays in force: %s",
                  "; ".join(f"{key}: {reason}" for key, reason in exc.problems), extra={"config": str(live.path)})
        return False
    pending = restart_required(live.settings, new)
    effective = _effective(live.settings, new)
    live.rebuild(effective)  # synchronous: no request sees half of the old and half of the new
    live.settings = effective
    logging.getLogger().setLevel(effective.log_level.upper())
    metrics.record_reload(True)
    log.info("configuration reloaded: %d upstream(s)", len(effective.upstreams), extra={"config": str(live.path)})
    if pending:
        log.warning("configuration reloaded, but these keys changed and take effect only after a restart: %s",
                    ", ".join(pending))
    return True
