"""session.encryption_secrets, max_pending_logins and max_header_size: validation and the *_file twin."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_settings, settings_from_mapping
from gateway.errors import ConfigError
from tests.unit.test_config import minimal


def test_defaults() -> None:
    s = settings_from_mapping(minimal(), environ={})
    assert s.session.encryption_secrets == [] and s.session.max_pending_logins == 100_000
    assert s.max_header_size == 8192


def test_short_encryption_secret_is_refused_without_echoing_it() -> None:
    data = minimal()
    data["session"]["encryption_secrets"] = ["n" * 32, "short-secret-value"]
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, environ={})
    text = str(info.value.problems)
    assert "session.encryption_secrets" in text and "32 bytes" in text and "short-secret-value" not in text


def test_encryption_secrets_file_holds_one_secret_per_line(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("n" * 32 + "\n" + "o" * 32 + "\n", encoding="utf-8")
    data = minimal()
    data["session"]["encryption_secrets_file"] = "keys"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    s = load_settings(tmp_path / "config.yaml", environ={})
    assert [x.get_secret_value() for x in s.session.encryption_secrets] == ["n" * 32, "o" * 32]


@pytest.mark.parametrize(("key", "value"), [("max_header_size", 100), ("max_header_size", 10 ** 8),
                                            ("header_timeout", "0s"), ("header_timeout", "soon")])
def test_header_limits_bounds(key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from_mapping({**minimal(), key: value}, environ={})
    assert key in str(caught.value)


def test_header_timeout_is_a_duration() -> None:
    assert settings_from_mapping(minimal(), environ={}).header_timeout == 20.0
    assert settings_from_mapping({**minimal(), "header_timeout": "1500ms"}, environ={}).header_timeout == 1.5


def test_pending_logins_at_least_one() -> None:
    data = minimal()
    data["session"]["max_pending_logins"] = 0
    with pytest.raises(ConfigError):
        settings_from_mapping(data, environ={})
