"""Configuration of the pages and of preserve_post: pages_dir and upstreams[].preserve_post(_max_size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import load_settings, settings_from_mapping
from gateway.errors import ConfigError

MINIMAL: dict[str, Any] = {
    "public_url": "http://127.0.0.1:4180",
    "oidc": {"issuer": "http://127.0.0.1:9000", "client_id": "gateway", "client_secret": "s3cret"},
    "session": {"store": "memory", "cookie_secret": "at-least-32-bytes-of-random-secret-material",
                "cookie_secure": False},
    "upstreams": [{"path": "/", "url": "http://127.0.0.1:8080"}],
}


def problems(raw: dict[str, Any], **kw: Any) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(raw, {}, **kw)
    return info.value.problems


def test_defaults() -> None:
    settings = settings_from_mapping(MINIMAL, {})
    assert settings.pages_dir is None
    assert settings.upstreams[0].preserve_post is False and settings.upstreams[0].preserve_post_max_size == 65536


def test_pages_dir_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "pages").mkdir()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({**MINIMAL, "pages_dir": "pages"}), encoding="utf-8")
    assert load_settings(config, environ={}).pages_dir == tmp_path / "pages"


def test_pages_dir_absolute(tmp_path: Path) -> None:
    assert settings_from_mapping({**MINIMAL, "pages_dir": str(tmp_path)}, {}).pages_dir == tmp_path


@pytest.mark.parametrize(("value", "fragment"), [
    ("missing", "does not exist"), ("file.txt", "is not a directory"), ("", "must not be empty"),
    ("bad", "error.html can't be read as UTF-8 text"),
])
def test_pages_dir_problems(tmp_path: Path, value: str, fragment: str) -> None:
    (tmp_path / "file.txt").write_text("x", encoding="utf-8")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "error.html").write_bytes(b"\xff\xfe not utf-8")
    found = problems({**MINIMAL, "pages_dir": value}, base_dir=tmp_path)
    assert [key for key, _ in found] == ["pages_dir"] and fragment in found[0][1]


@pytest.mark.parametrize(("size", "ok"), [(1, True), (1024 * 1024, True), (0, False), (1024 * 1024 + 1, False),
                                          (-5, False), ("64k", False)])
def test_preserve_post_max_size_bounds(size: Any, ok: bool) -> None:
    raw = {**MINIMAL, "upstreams": [{"path": "/", "url": "http://127.0.0.1:8080", "preserve_post": True,
                                     "preserve_post_max_size": size}]}
    if ok:
        assert settings_from_mapping(raw, {}).upstreams[0].preserve_post_max_size == size
    else:
        assert [key for key, _ in problems(raw)] == ["upstreams[0].preserve_post_max_size"]
