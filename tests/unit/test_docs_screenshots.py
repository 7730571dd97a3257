"""The README's login journey shows screenshots that exist (tests/e2e take them; SCREENSHOTS=1 refreshes)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_screenshot_in_the_readme_exists_and_is_a_phone_sized_png() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    shown = re.findall(r"\]\((docs/screenshots/[^)]+\.png)\)", readme)
    assert len(shown) >= 20
    for name in shown:
        data = (REPO / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", name
        width, height = struct.unpack(">II", data[16:24])
        assert width == 390 and height >= 844, (name, width, height)
        assert len(data) < 200_000, name  # small enough to commit


def test_every_committed_screenshot_is_shown() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for png in (REPO / "docs" / "screenshots").glob("*.png"):
        assert f"docs/screenshots/{png.name}" in readme, png.name
