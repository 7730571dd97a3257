"""PostPreserver's origin comparison (the same-origin rule of preserve_post)."""

from __future__ import annotations

import pytest

from gateway.auth.preserve import _origin


@pytest.mark.parametrize(("a", "b", "same"), [
    ("https://app.example.com", "https://app.example.com", True),
    ("https://app.example.com", "https://APP.example.com:443", True),
    ("http://127.0.0.1:4180", "http://127.0.0.1:4180", True),
    ("http://app.example.com", "http://app.example.com:80", True),
    ("https://app.example.com", "http://app.example.com", False),
    ("https://app.example.com", "https://app.example.com:8443", False),
    ("https://app.example.com", "https://evil.example.com", False),
    ("https://app.example.com", "https://app.example.com.evil.example", False),
])
def test_origins(a: str, b: str, same: bool) -> None:
    assert (_origin(a) == _origin(b)) is same


@pytest.mark.parametrize("bad", ["null", "", "file://", "https://", "https://h:99999", "javascript:x", "//h"])
def test_unusable_origins(bad: str) -> None:
    assert _origin(bad) is None
