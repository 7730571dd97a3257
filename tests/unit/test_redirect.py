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


# --- access.redirect_domains: absolute URLs to allow-listed hosts (forward-auth) -----------------

DOMAINS = ["app.example.com", ".corp.example.org", "127.0.0.1"]


@pytest.mark.parametrize("rd", [
    "https://app.example.com/x?y=1", "http://app.example.com:8443/p#f", "https://APP.example.com/",
    "https://a.b.corp.example.org/", "https://corp.example.org", "http://127.0.0.1:8080/deep",
])
def test_allow_listed_absolute_urls_kept(rd: str) -> None:
    assert safe_return_path(rd, DOMAINS) == rd


@pytest.mark.parametrize("rd", [
    "https://evil.example.com.attacker.net/", "https://app.example.com.attacker.net/",
    "https://user@app.example.com/", "https://user:pw@app.example.com/", "https://evil.com@app.example.com/",
    "//app.example.com/x", "///app.example.com", "ftp://app.example.com/", "javascript://app.example.com/%0a1",
    "https:/app.example.com/x", "https:app.example.com", "https://x.app.example.com/", "https://example.com/",
    "https://evilcorp.example.org/", "https://app.example.com./", "https://app.example.com:99999/",
    "https://app.example.com:/", "https://app.example.com:80x/", "https://[::1]/", "https://app.example.com%2e/",
    "https://app.example.com\\@evil.com/", "https://app.example.com/\r\nSet-Cookie:x", "https://app.exam\tple.com/",
    "https://evil.com/", "https://-app.example.com/", "https://app.example.com/" + "a" * 2048,
])
def test_absolute_urls_outside_the_allow_list_fall_back_to_root(rd: str) -> None:
    assert safe_return_path(rd, DOMAINS) == "/"


def test_absolute_urls_need_an_allow_list() -> None:
    assert safe_return_path("https://app.example.com/x") == "/"
    assert safe_return_path("/x", DOMAINS) == "/x"  # paths are still fine with an allow-list


@pytest.mark.parametrize("rd", ["//evil.com", "/\\evil.com", "javascript:alert(1)", "/\t/evil.com"])
def test_path_rejects_hold_with_an_allow_list(rd: str) -> None:
    assert safe_return_path(rd, DOMAINS) == "/"
