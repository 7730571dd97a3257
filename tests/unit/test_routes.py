"""UpstreamTable: longest-prefix matching on segment boundaries, and upstream URL joining."""

from __future__ import annotations

import pytest

from gateway.config import UpstreamSettings
from gateway.proxy.routes import UpstreamTable


def table(*specs: tuple[str, str]) -> UpstreamTable:
    return UpstreamTable([UpstreamSettings(path=path, url=url) for path, url in specs])


ROUTES = table(
    ("/", "http://root:1"),
    ("/api", "http://api:2"),
    ("/api/v2", "http://v2:3"),
    ("/static/", "http://static:4"),
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", "/"),
        ("/anything/else", "/"),
        ("/api", "/api"),
        ("/api/", "/api"),
        ("/api/x", "/api"),
        ("/apix", "/"),
        ("/api/v2", "/api/v2"),
        ("/api/v2/users", "/api/v2"),
        ("/api/v20", "/api"),
        ("/static/", "/static/"),
        ("/static/app.js", "/static/"),
        ("/static", "/"),  # a prefix ending in "/" matches by plain startswith only
        ("/staticx", "/"),
    ],
)
def test_longest_prefix_on_segment_boundaries(path: str, expected: str) -> None:
    route = ROUTES.match(path)
    assert route is not None
    assert route.upstream.path == expected


def test_no_match_without_a_root_upstream() -> None:
    routes = table(("/api", "http://api:2"))
    assert routes.match("/") is None
    assert routes.match("/apix") is None
    assert routes.match("/other/api") is None
    assert routes.match("/api/x") is not None


def test_order_of_configuration_does_not_matter() -> None:
    routes = UpstreamTable([UpstreamSettings(path="/a", url="http://a:1"),
                            UpstreamSettings(path="/a/b", url="http://ab:1"),
                            UpstreamSettings(path="/", url="http://root:1")])
    assert routes.match("/a/b/c").upstream.path == "/a/b"  # type: ignore[union-attr]
    assert routes.match("/a/bc").upstream.path == "/a"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("upstream_url", "raw_path", "raw_query", "expected"),
    [
        ("http://h:1", "/x", "", "http://h:1/x"),
        ("http://h:1/", "/x", "", "http://h:1/x"),
        ("http://h:1/base", "/x", "", "http://h:1/base/x"),
        ("http://h:1/base/", "/x/y/", "", "http://h:1/base/x/y/"),
        ("https://h/base", "/", "", "https://h/base/"),
    ],
)
def test_request_path_is_appended_to_the_upstream_path(upstream_url: str, raw_path: str, raw_query: str,
                                                        expected: str) -> None:
    route = table(("/", upstream_url)).match(raw_path)
    assert route is not None
    assert str(route.url_for(raw_path, raw_query)) == expected


def test_prefix_is_not_stripped() -> None:
    route = table(("/api", "http://h:1/base")).match("/api/users")
    assert route is not None
    assert route.url_for("/api/users").raw_path == "/base/api/users"


@pytest.mark.parametrize(
    ("raw_path", "raw_query"),
    [
        ("/a%2Fb/%61pi", "q=%20x&b=%2F+y&c=%3D"),
        ("/caf%C3%A9/x;p=1", "a=1&a=2&empty="),
        ("//double//slash", "x=%zz"),
    ],
)
def test_raw_path_and_query_are_kept_verbatim(raw_path: str, raw_query: str) -> None:
    route = table(("/", "http://h:1/base")).match("/")
    assert route is not None
    url = route.url_for(raw_path, raw_query)
    assert url.raw_path == "/base" + raw_path
    assert url.raw_query_string == raw_query
    assert url.raw_path_qs == f"/base{raw_path}?{raw_query}"  # the request line the upstream gets


def test_route_timeouts_come_from_the_upstream_settings() -> None:
    routes = UpstreamTable([UpstreamSettings(path="/", url="http://h:1", connect_timeout=1.5, read_timeout=7)])
    route = routes.match("/")
    assert route is not None
    assert (route.timeout.total, route.timeout.sock_connect, route.timeout.sock_read) == (None, 1.5, 7.0)
