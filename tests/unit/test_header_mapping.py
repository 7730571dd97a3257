"""`headers`: claim → header mapping, the ID-token header, switching off Authorization, spoof stripping."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict
from pydantic import ValidationError

from gateway.auth.identity import Identity
from gateway.config import HeaderSettings
from gateway.proxy.headers import MAX_HEADER_VALUE, IdentityHeaders, upstream_headers

CLAIMS = {"sub": "alice", "phone_number": "+1 555 0100", "name": "Zoë 名前", "verified": True, "age": 42,
          "roles": ["a", "b,c", "d"], "address": {"country": "NZ"}, "evil": "x\r\nX-Injected: 1\x00\x85"}
ALICE = Identity.from_claims(CLAIMS, access_token="at-123", id_token="id.tok.en")
MAP = {"X-User-Phone": "phone_number", "X-User-Name": "name", "X-User-Verified": "verified", "X-User-Age": "age",
       "X-User-Roles": "roles", "X-User-Address": "address", "X-User-Evil": "evil", "X-User-Missing": "nope"}


def mapping(**settings: Any) -> IdentityHeaders:
    return IdentityHeaders(HeaderSettings.model_validate(settings))


def forward(pairs: list[tuple[str, str]], identity: Identity | None, headers: IdentityHeaders) -> CIMultiDict[str]:
    return upstream_headers(CIMultiDict(pairs), identity, cookie_names=frozenset(), peer="198.51.100.7",
                            forwarded_proto="https", mapping=headers)


def test_mapped_claims_are_sent_formatted_and_sanitised() -> None:
    out = mapping(claims=MAP)(ALICE)
    assert out["X-User-Phone"] == "+1 555 0100"
    assert out["X-User-Name"] == "Zoë 名前"  # non-ASCII kept, sent as UTF-8
    assert out["X-User-Verified"] == "true" and out["X-User-Age"] == "42"
    assert out["X-User-Roles"] == "a,d"  # comma-joined; an element with a comma is left out
    assert out["X-User-Evil"] == "xX-Injected: 1"  # CR/LF/NUL/C1 removed: no header injection
    assert "X-User-Address" not in out and "X-User-Missing" not in out
    assert out["X-Auth-Request-User"] == "alice" and out["Authorization"] == "Bearer at-123"


def test_over_long_mapped_values_are_omitted() -> None:
    identity = Identity.from_claims({"sub": "a", "big": "x" * (MAX_HEADER_VALUE + 1)})
    assert "X-Big" not in mapping(claims={"X-Big": "big"})(identity)


def test_id_token_header_is_opt_in() -> None:
    assert "X-Auth-Request-Id-Token" not in mapping()(ALICE)
    assert mapping(id_token=True)(ALICE)["X-Auth-Request-Id-Token"] == "id.tok.en"
    assert "X-Auth-Request-Id-Token" not in mapping(id_token=True)(Identity(sub="a"))


def test_access_token_header_can_be_switched_off() -> None:
    assert "Authorization" not in mapping(access_token=False)(ALICE)
    # ... and the client's own Authorization still never reaches the upstream with an identity.
    out = forward([("Authorization", "Bearer forged")], ALICE, mapping(access_token=False))
    assert "Authorization" not in out


@pytest.mark.parametrize("identity", [ALICE, None], ids=["authenticated", "public"])
@pytest.mark.parametrize("name", ["X-User-Phone", "x-user-phone", "X_User_Phone", "X-USER-NAME"])
def test_mapped_header_names_are_stripped_from_client_requests(name: str, identity: Identity | None) -> None:
    out = forward([(name, "mallory"), ("Accept", "*/*")], identity, mapping(claims=MAP))
    assert "mallory" not in out.values()
    assert out["Accept"] == "*/*"
    if identity is not None:
        assert out["X-User-Phone"] == "+1 555 0100"


def test_client_id_token_header_is_stripped() -> None:
    out = forward([("X-Auth-Request-Id-Token", "forged")], None, mapping(id_token=True))
    assert "X-Auth-Request-Id-Token" not in out


@pytest.mark.parametrize("name", ["Authorization", "cookie", "Host", "X-Forwarded-For", "X-Request-Id",
                                  "X-Auth-Request-User", "X-Auth-Request-Id-Token", "Bad Name", "X:Y",
                                  "X_Under", "Transfer-Encoding", "Sec-WebSocket-Key", "x" * 65])
def test_reserved_or_invalid_header_names_are_rejected(name: str) -> None:
    with pytest.raises(ValidationError):
        HeaderSettings.model_validate({"claims": {name: "sub"}})


def test_duplicate_names_differing_in_case_are_rejected() -> None:
    with pytest.raises(ValidationError, match="twice"):
        HeaderSettings.model_validate({"claims": {"X-A": "a", "x-a": "b"}})
