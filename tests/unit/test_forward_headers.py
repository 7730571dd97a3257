"""Header hygiene of the proxy, as pure functions: what the upstream and the client get to see."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from gateway.auth.identity import Identity
from gateway.proxy.headers import (
    MAX_HEADER_VALUE,
    downstream_headers,
    identity_headers,
    strip_cookies,
    upstream_headers,
)

ALICE = Identity(sub="alice", email="alice@example.com", username="alice.l", groups=("a", "b"),
                 access_token="at-123")
COOKIES = frozenset({"_gw", "_gw_login"})


def forward(pairs: list[tuple[str, str]], identity: Identity | None = ALICE, **kwargs: object) -> CIMultiDict[str]:
    options: dict[str, object] = {"cookie_names": COOKIES, "peer": "198.51.100.7", "forwarded_proto": "https"}
    options.update(kwargs)
    return upstream_headers(CIMultiDict(pairs), identity, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [
    "X-Auth-Request-User", "x-auth-request-user", "X-AUTH-REQUEST-EMAIL", "X-Auth-Request-Groups",
    "X-Auth-Request-Preferred-Username", "X-Auth-Request-Access-Token", "X-Auth-Request-Anything",
    "X_Auth_Request_User", "x-auth_request-groups",
])
@pytest.mark.parametrize("identity", [ALICE, None], ids=["authenticated", "public"])
def test_spoofed_auth_request_headers_are_removed(name: str, identity: Identity | None) -> None:
    out = forward([(name, "mallory"), ("Accept", "*/*")], identity)
    assert "mallory" not in out.values()
    assert out["Accept"] == "*/*"
    if identity is not None:
        assert out.getall("X-Auth-Request-User") == ["alice"]


def test_identity_headers_are_set() -> None:
    out = forward([])
    assert out.getall("X-Auth-Request-User") == ["alice"]
    assert out["X-Auth-Request-Email"] == "alice@example.com"
    assert out["X-Auth-Request-Preferred-Username"] == "alice.l"
    assert out["X-Auth-Request-Groups"] == "a,b"
    assert out.getall("Authorization") == ["Bearer at-123"]


def test_unknown_claims_are_not_sent() -> None:
    out = forward([], Identity(sub="bob"))
    assert out["X-Auth-Request-User"] == "bob"
    for name in ("X-Auth-Request-Email", "X-Auth-Request-Preferred-Username", "X-Auth-Request-Groups",
                 "Authorization"):
        assert name not in out


def test_client_authorization_is_replaced_when_authenticated() -> None:
    out = forward([("Authorization", "Bearer client-token"), ("authorization", "Basic Zm9vOmJhcg==")])
    assert out.getall("Authorization") == ["Bearer at-123"]


def test_client_authorization_is_dropped_even_without_an_access_token() -> None:
    out = forward([("Authorization", "Bearer client-token")], Identity(sub="bob"))
    assert "Authorization" not in out


def test_client_authorization_passes_on_public_paths() -> None:
    out = forward([("Authorization", "Basic Zm9vOmJhcg==")], None)
    assert out.getall("Authorization") == ["Basic Zm9vOmJhcg=="]
    assert not any(name.lower().startswith("x-auth-request-") for name in out)


def test_gateway_cookies_are_stripped_and_others_kept() -> None:
    out = forward([("Cookie", "theme=dark; _gw=secret-session; lang=en;_gw_login=xyz")])
    assert out.getall("Cookie") == ["theme=dark; lang=en"]


def test_cookie_header_without_gateway_cookies_is_kept_byte_for_byte() -> None:
    value = "theme=dark;lang=en;  x=\"q\"; _gwx=1; a_gw=2"
    assert forward([("Cookie", value)]).getall("Cookie") == [value]


def test_cookie_header_with_only_gateway_cookies_is_dropped() -> None:
    out = forward([("Cookie", "_gw=secret"), ("Cookie", "_gw_login=1; _gw=2")])
    assert "Cookie" not in out


@pytest.mark.parametrize(("value", "expected"), [
    ("_gw=1", None),
    ("a=1; _gw=1", "a=1"),
    ("_gw = 1 ; b=2", "b=2"),
    ("_gw", None),  # a nameless value still names _gw
    ("a=_gw", "a=_gw"),
    ("", ""),
])
def test_strip_cookies(value: str, expected: str | None) -> None:
    assert strip_cookies(value, COOKIES) == expected


def test_hop_by_hop_and_connection_named_headers_are_removed() -> None:
    out = forward([
        ("Connection", "keep-alive, X-Hop-Secret"), ("Connection", "x-second"), ("Keep-Alive", "timeout=5"),
        ("X-Hop-Secret", "1"), ("X-Second", "2"), ("Proxy-Authorization", "Basic eA=="),
        ("Proxy-Authenticate", "Basic"), ("TE", "trailers"), ("Trailer", "X-T"), ("Trailers", "X-T"),
        ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"), ("Proxy-Connection", "keep-alive"),
        ("Expect", "100-continue"), ("X-Kept", "yes"),
    ])
    kept = {name.lower() for name in out}
    assert kept.isdisjoint({"connection", "keep-alive", "x-hop-secret", "x-second", "proxy-authorization",
                            "proxy-authenticate", "te", "trailer", "trailers", "transfer-encoding",
                            "upgrade", "proxy-connection", "expect"})
    assert out["X-Kept"] == "yes"


def test_content_length_kept_unless_chunked() -> None:
    assert forward([("Content-Length", "10")])["Content-Length"] == "10"
    out = forward([("Content-Length", "10"), ("Transfer-Encoding", "chunked")])
    assert "Content-Length" not in out


@pytest.mark.parametrize("claim", ["sub", "email", "username"])
@pytest.mark.parametrize("evil", ["x\r\nX-Injected: 1", "x\nX-Injected: 1", "x\rX-Injected: 1", "x\x00y\x7f\x85"])
def test_control_characters_in_claims_cannot_inject_headers(claim: str, evil: str) -> None:
    identity = Identity(**{"sub": "alice", claim: evil})  # type: ignore[arg-type]
    out = forward([], identity)
    assert "X-Injected" not in out
    for value in out.values():
        assert not any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 for ch in value), repr(value)
    name = {"sub": "X-Auth-Request-User", "email": "X-Auth-Request-Email",
            "username": "X-Auth-Request-Preferred-Username"}[claim]
    assert out[name].startswith("x")


def test_control_characters_in_groups_and_token_are_removed() -> None:
    out = forward([], Identity(sub="a", groups=("g1\r\nX-Injected: 1", "g2"), access_token="t\r\nX: y"))
    assert out["X-Auth-Request-Groups"] == "g1X-Injected: 1,g2"
    assert out["Authorization"] == "Bearer tX: y"


def test_non_ascii_claims_are_kept() -> None:
    out = identity_headers(Identity(sub="süb", email="zoë@exämple.org", username="名前", groups=("grüppe",)))
    assert out["X-Auth-Request-User"] == "süb"
    assert out["X-Auth-Request-Email"] == "zoë@exämple.org"
    assert out["X-Auth-Request-Preferred-Username"] == "名前"
    assert out["X-Auth-Request-Groups"] == "grüppe"


def test_over_long_values_are_omitted_not_truncated() -> None:
    long = "a" * (MAX_HEADER_VALUE + 1)
    out = identity_headers(Identity(sub=long, email="ok@example.com", access_token=long))
    assert "X-Auth-Request-User" not in out
    assert "Authorization" not in out
    assert out["X-Auth-Request-Email"] == "ok@example.com"
    wide = "é" * (MAX_HEADER_VALUE // 2 + 1)  # fits in characters, not in UTF-8 bytes
    assert "X-Auth-Request-User" not in identity_headers(Identity(sub=wide))


def test_groups_keep_whole_names_within_the_bound() -> None:
    groups = tuple(f"group-{i:05d}" for i in range(2000))  # ~24 KiB joined
    value = identity_headers(Identity(sub="a", groups=groups))["X-Auth-Request-Groups"]
    assert len(value.encode()) <= MAX_HEADER_VALUE
    names = value.split(",")
    assert names == list(groups[: len(names)])


def test_groups_with_commas_are_left_out() -> None:
    value = identity_headers(Identity(sub="a", groups=("readers", "x,admins", "", "writers")))
    assert value["X-Auth-Request-Groups"] == "readers,writers"


def test_forwarded_for_is_appended_and_the_rest_is_set() -> None:
    out = forward([("X-Forwarded-For", "203.0.113.1, 10.0.0.1"), ("X-Forwarded-For", "10.0.0.2"),
                   ("Host", "app.example.com"), ("X-Forwarded-Proto", "http"),
                   ("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Prefix", "/evil"),
                   ("X_Forwarded_For", "6.6.6.6"), ("Forwarded", "for=6.6.6.6"), ("X-Real-IP", "6.6.6.6")])
    assert out.getall("X-Forwarded-For") == ["203.0.113.1, 10.0.0.1, 10.0.0.2, 198.51.100.7"]
    assert out.getall("X-Forwarded-Proto") == ["https"]
    assert out.getall("X-Forwarded-Host") == ["app.example.com"]
    assert out.getall("X-Real-IP") == ["198.51.100.7"]
    assert "6.6.6.6" not in " ".join(out.values())
    assert "X-Forwarded-Prefix" not in out
    assert "Forwarded" not in out
    assert "Host" not in out  # the HTTP client sets the upstream's own


def test_forwarded_for_starts_with_the_peer() -> None:
    assert forward([])["X-Forwarded-For"] == "198.51.100.7"


def test_host_is_passed_when_configured() -> None:
    out = forward([("Host", "app.example.com")], pass_host=True)
    assert out.getall("Host") == ["app.example.com"]
    assert out["X-Forwarded-Host"] == "app.example.com"


def test_websocket_handshake_headers_are_left_to_the_upstream_handshake() -> None:
    pairs = [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Key", "k"),
             ("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Protocol", "a, b"),
             ("Sec-WebSocket-Extensions", "permessage-deflate"), ("Origin", "https://app.example.com")]
    out = forward(pairs, websocket=True)
    assert not any(name.lower().startswith("sec-websocket-") for name in out)
    assert out["Origin"] == "https://app.example.com"
    assert out["X-Auth-Request-User"] == "alice"
    assert forward(pairs)["Sec-WebSocket-Key"] == "k"  # plain requests are left alone


def test_downstream_headers_drop_hop_by_hop_and_keep_repeats() -> None:
    out = downstream_headers(CIMultiDict([
        ("Connection", "close, X-Internal"), ("X-Internal", "1"), ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"), ("Content-Length", "5"), ("Proxy-Authenticate", "Basic"),
        ("Upgrade", "h2c"), ("Trailer", "X-T"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
        ("Content-Type", "text/plain"),
    ]))
    assert list(out.items()) == [("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Type", "text/plain")]


def test_downstream_content_length_is_kept() -> None:
    out = downstream_headers(CIMultiDict([("Content-Length", "5"), ("Content-Encoding", "gzip")]))
    assert list(out.items()) == [("Content-Length", "5"), ("Content-Encoding", "gzip")]
