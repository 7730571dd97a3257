"""gateway.web.reload: what a SIGHUP applies, what it keeps, and an invalid file changing nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from gateway.config import Settings, load_settings
from gateway.web.observability import Metrics
from gateway.web.reload import LiveConfig, reload_config, restart_required
from tests.conftest import COOKIE_SECRET

BASE = {
    "listen": "127.0.0.1:4180", "public_url": "http://127.0.0.1:4180", "log_level": "info",
    "oidc": {"issuer": "http://127.0.0.1:9000", "client_id": "gateway", "client_secret": "s3cret-s3cret"},
    "session": {"store": "memory", "cookie_secret": COOKIE_SECRET, "cookie_secure": False},
    "upstreams": [{"path": "/", "url": "http://127.0.0.1:8080"}],
}


def write(path: Path, **changes: object) -> Path:
    path.write_text(yaml.safe_dump({**BASE, **changes}))
    return path


class Rebuilds:
    def __init__(self) -> None:
        self.applied: list[Settings] = []

    def __call__(self, settings: Settings) -> None:
        self.applied.append(settings)


def live(path: Path) -> tuple[LiveConfig, Rebuilds, Metrics]:
    rebuilds = Rebuilds()
    return LiveConfig(load_settings(path), path, rebuilds), rebuilds, Metrics()


def reloads(metrics: Metrics, outcome: str) -> float:
    return metrics.registry.get_sample_value("oidc_gateway_config_reloads_total", {"outcome": outcome}) or 0.0


def test_upstreams_rules_and_log_level_are_applied(tmp_path: Path) -> None:
    config, rebuilds, metrics = live(write(tmp_path / "c.yaml"))
    write(config.path, upstreams=[{"path": "/", "url": "http://127.0.0.1:9090"}, {"path": "/api", "url": "http://127.0.0.1:9091"}],
          access={"public_paths": ["^/open/"], "allowed_groups": ["staff"]}, log_level="debug")
    root = logging.getLogger()
    level = root.level
    try:
        assert reload_config(config, metrics)
        assert root.level == logging.DEBUG
    finally:
        root.setLevel(level)
    (applied,) = rebuilds.applied
    assert [u.url for u in applied.upstreams] == ["http://127.0.0.1:9090", "http://127.0.0.1:9091"]
    assert applied.access.public_paths == ["^/open/"] and applied.access.allowed_groups == ["staff"]
    assert config.settings is applied
    assert reloads(metrics, "success") == 1


def test_keys_that_need_a_restart_keep_their_running_value_and_are_named(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config, rebuilds, metrics = live(write(tmp_path / "c.yaml"))
    write(config.path, oidc={**BASE["oidc"], "client_id": "other"},  # type: ignore[dict-item]
          access={"bearer": {"audiences": ["api"]}, "allowed_groups": ["staff"]}, listen="127.0.0.1:4181")
    with caplog.at_level(logging.WARNING, "gateway.web.reload"):
        assert reload_config(config, metrics)
    (applied,) = rebuilds.applied
    assert applied.oidc.client_id == "gateway" and applied.listen == "127.0.0.1:4180"
    assert applied.access.bearer.audiences == [] and applied.access.allowed_groups == ["staff"]
    assert "take effect only after a restart: listen, oidc, access.bearer" in caplog.text
    assert "other" not in caplog.text  # keys are named, values never


@pytest.mark.parametrize("content", ["upstreams: [", "listen: nope\n", None])
def test_an_invalid_or_missing_file_keeps_the_running_configuration(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str | None) -> None:
    config, rebuilds, metrics = live(write(tmp_path / "c.yaml"))
    before = config.settings
    if content is None:
        config.path.unlink()  # type: ignore[union-attr]
    else:
        config.path.write_text(yaml.safe_dump(BASE) + content)  # type: ignore[union-attr]
    with caplog.at_level(logging.ERROR, "gateway.web.reload"):
        assert not reload_config(config, metrics)
    assert rebuilds.applied == [] and config.settings is before
    assert "reload rejected, the running configuration stays in force" in caplog.text
    assert reloads(metrics, "failure") == 1 and reloads(metrics, "success") == 0


def test_without_a_file_sighup_is_ignored(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path / "c.yaml"))
    assert not reload_config(LiveConfig(settings), Metrics())


def test_restart_required_lists_nothing_for_reloadable_changes(tmp_path: Path) -> None:
    old = load_settings(write(tmp_path / "a.yaml"))
    new = load_settings(write(tmp_path / "b.yaml", max_body_size=10, log_level="error",
                              upstreams=[{"path": "/", "url": "http://127.0.0.1:9999"}]))
    assert restart_required(old, new) == []
    assert restart_required(old, load_settings(write(tmp_path / "c.yaml", shutdown_timeout="5s"))) == [
        "shutdown_timeout"]
