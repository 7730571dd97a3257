"""safe_return_path: only same-origin relative paths survive; everything else becomes "/"."""

import pytest

from gateway.auth.redirect import safe_return_path


@pytest.mark.parametrize("rd", ["/", "/app", "/app/deep?x=1&y=%2F", "/a/b#frag", "/%2F%2Fevil.com"])
def test_same_origin_paths_kept(rd: str) -> None:
    assert safe_return_path(rd) == rd


@pytest.mark.parametrize("rd", [
    None, "", "//evil.com", "//evil.com/x", "/\\evil.com", "\\\\evil.com", "/a\\b",
    "https://evil.com", "http://evil.com/", "javascript:alert(1)", "evil.com", "./x", "x/y",
    "/\t/evil.com", "/\n/evil.com", "/\r\nSet-Cookie: x=1", "/a\x00b", " /x", "/x y",
    "/caf\u00e9", "/" + "a" * 2048, "https:/evil.com", "///evil.com",
])
def test_hostile_return_paths_fall_back_to_root(rd: str | None) -> None:
    assert safe_return_path(rd) == "/"
