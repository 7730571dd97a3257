"""Signed cookie values: unguessable ids, tamper detection, no cross-cookie replay."""

from gateway.session.cookie import SignedCookie, derive_key

KEY = derive_key(b"x" * 32, "session-cookie")


def make(name: str = "_oidc_gateway", key: bytes = KEY) -> SignedCookie:
    return SignedCookie(name, key, secure=True, max_age=3600)


def test_round_trip_and_fresh_ids() -> None:
    cookie = make()
    ident = cookie.new_id()
    assert len(ident) >= 43 and ident != cookie.new_id()
    assert cookie.decode(cookie.encode(ident)) == ident


def test_tampered_values_read_as_no_cookie() -> None:
    cookie = make()
    value = cookie.encode(cookie.new_id())
    ident, _, mac = value.rpartition(".")
    assert cookie.decode(ident) is None
    assert cookie.decode(ident + "." + mac[:-1] + ("A" if mac[-1] != "A" else "B")) is None
    assert cookie.decode(("A" if value[0] != "A" else "B") + value[1:]) is None  # a changed id
    assert cookie.decode("") is None and cookie.decode(None) is None
    assert cookie.decode(value + "x" * 300) is None


def test_other_key_or_other_cookie_name_does_not_verify() -> None:
    value = make().encode("some-id")
    assert make(key=derive_key(b"y" * 32, "session-cookie")).decode(value) is None
    assert make(name="_oidc_gateway_login").decode(value) is None
    assert derive_key(b"x" * 32, "a") != derive_key(b"x" * 32, "b")


def test_read_takes_the_verifying_one_of_several_same_name_cookies() -> None:
    from aiohttp.test_utils import make_mocked_request

    cookie = make()
    good = cookie.encode("the-id")
    for header, expected in [
        (f"_oidc_gateway={good}", "the-id"),
        (f"a=1; _oidc_gateway=forged.value; _oidc_gateway={good}; b=2", "the-id"),
        (f"x_oidc_gateway={good}", None),
        (f"_oidc_gateway_login={good}", None),
        ("_oidc_gateway=", None),
        ("", None),
    ]:
        request = make_mocked_request("GET", "/", headers={"Cookie": header} if header else {})
        assert cookie.read(request) == expected, header
