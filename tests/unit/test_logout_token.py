"""TokenVerifier.logout_token: every Back-Channel Logout 1.0 §2.6 rejection, each failing if its check is removed."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from gateway.errors import InvalidToken
from gateway.oidc.jwks import KeySet
from gateway.oidc.verify import LOGOUT_EVENT, LOGOUT_TOKEN_MAX_AGE, LogoutToken, TokenVerifier
from tests.unit.test_verify import CLIENT_ID, EC_KEY, ISSUER, NOW, OTHER_RSA_KEY, RSA_KEY, SECRET, _jwk

SKEW = 60


def make_verifier(algs: list[str] | None = None) -> TokenVerifier:
    keys = KeySet(None, lambda: None, min_refresh_interval=3600, clock=lambda: NOW)  # type: ignore[arg-type]
    keys.load({"keys": [_jwk(RSA_KEY, "rsa1", "RS256"), _jwk(EC_KEY, "ec1", "ES256")]})
    # The bearer allow-list deliberately differs: logout tokens follow the ID-token one.
    return TokenVerifier(issuer=ISSUER, client_id=CLIENT_ID, client_secret=SECRET,
                         id_token_algs=algs or ["RS256", "ES256", "HS256"], bearer_algs=["ES256"],
                         bearer_audiences=["api"], keys=keys, clock_skew=SKEW, clock=lambda: NOW)


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISSUER, "aud": CLIENT_ID, "iat": NOW - 5, "exp": NOW + 115, "jti": "jti-1",
                            "sub": "alice", "sid": "op-sid-1", "events": {LOGOUT_EVENT: {}}}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], *, alg: str = "RS256", kid: str | None = "rsa1", key: Any = None,
         typ: Any = "logout+jwt") -> str:
    if key is None:
        key = {"RS256": RSA_KEY, "ES256": EC_KEY, "HS256": SECRET.encode()}[alg]
    headers: dict[str, Any] = {"kid": kid} if kid else {}
    headers["typ"] = typ  # None: PyJWT leaves typ out
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


async def _rejected(token: str, reason: str, verifier: TokenVerifier | None = None) -> None:
    with pytest.raises(InvalidToken) as info:
        await (verifier or make_verifier()).logout_token(token)
    assert info.value.detail == reason


async def test_valid_logout_token_names_sid_sub_and_replay_window() -> None:
    got = await make_verifier().logout_token(sign(claims()))
    assert got == LogoutToken(iss=ISSUER, sub="alice", sid="op-sid-1", jti="jti-1", not_after=NOW + 115 + SKEW)


async def test_sid_only_and_sub_only_pass() -> None:
    sid_only = await make_verifier().logout_token(sign(claims(sub=None)))
    assert (sid_only.sid, sid_only.sub) == ("op-sid-1", None)
    sub_only = await make_verifier().logout_token(sign(claims(sid=None)))
    assert (sub_only.sid, sub_only.sub) == (None, "alice")


async def test_es256_and_hs256_logout_tokens_pass() -> None:
    verifier = make_verifier()
    assert (await verifier.logout_token(sign(claims(), alg="ES256", kid="ec1"))).jti == "jti-1"
    assert (await verifier.logout_token(sign(claims(), alg="HS256", kid=None))).jti == "jti-1"


async def test_alg_none_rejected() -> None:
    await _rejected(jwt.encode(claims(), None, algorithm="none"), "signing algorithm not allowed")


async def test_alg_outside_id_token_allow_list_rejected() -> None:
    # ES256 is in the bearer allow-list, but logout tokens use the ID-token one.
    await _rejected(sign(claims(), alg="ES256", kid="ec1"), "signing algorithm not allowed", make_verifier(["RS256"]))
    await _rejected(sign(claims(), alg="HS256", kid=None), "signing algorithm not allowed", make_verifier(["RS256"]))


async def test_bad_signature_rejected() -> None:
    await _rejected(sign(claims(), key=OTHER_RSA_KEY), "bad signature")
    await _rejected(sign(claims(), alg="HS256", kid=None, key=b"another-secret-0123456789abcdefgh"), "bad signature")


async def test_unknown_kid_rejected() -> None:
    await _rejected(sign(claims(), kid="nope"), "no matching signing key")


@pytest.mark.parametrize("typ", ["logout+jwt", "application/logout+jwt", "Logout+JWT", "JWT", None])
async def test_logout_and_generic_types_pass(typ: str | None) -> None:
    assert (await make_verifier().logout_token(sign(claims(), typ=typ))).jti == "jti-1"


@pytest.mark.parametrize("typ", ["at+jwt", "id_token+jwt", "secevent+jwt", "application/jwt+logout", 1])
async def test_other_explicit_types_rejected(typ: Any) -> None:
    await _rejected(sign(claims(), typ=typ), "token type not allowed")


async def test_issuer_mismatch_rejected() -> None:
    await _rejected(sign(claims(iss="https://evil.example.com")), "issuer mismatch")
    await _rejected(sign(claims(iss=None)), "issuer mismatch")


async def test_audience_mismatch_rejected() -> None:
    await _rejected(sign(claims(aud="someone-else")), "audience mismatch")
    await _rejected(sign(claims(aud=None)), "audience mismatch")
    assert await make_verifier().logout_token(sign(claims(aud=[CLIENT_ID])))


async def test_multiple_audiences_need_azp_like_id_tokens() -> None:
    await _rejected(sign(claims(aud=[CLIENT_ID, "other"])), "authorized party mismatch")
    assert await make_verifier().logout_token(sign(claims(aud=[CLIENT_ID, "other"], azp=CLIENT_ID)))


async def test_iat_missing_or_in_future_rejected() -> None:
    await _rejected(sign(claims(iat=None)), "issued-at missing or in the future")
    await _rejected(sign(claims(iat=NOW + SKEW + 1)), "issued-at missing or in the future")
    assert await make_verifier().logout_token(sign(claims(iat=NOW + SKEW - 1)))


async def test_expired_rejected_beyond_skew_only() -> None:
    await _rejected(sign(claims(exp=NOW - SKEW)), "token expired")
    await _rejected(sign(claims(exp="soon")), "token expired")
    assert (await make_verifier().logout_token(sign(claims(exp=NOW - SKEW + 1)))).not_after == NOW + 1


async def test_without_exp_lives_max_age_after_iat() -> None:
    fresh = await make_verifier().logout_token(sign(claims(exp=None, iat=NOW - 30)))
    assert fresh.not_after == NOW - 30 + LOGOUT_TOKEN_MAX_AGE + SKEW
    await _rejected(sign(claims(exp=None, iat=NOW - LOGOUT_TOKEN_MAX_AGE - SKEW)), "token expired")


@pytest.mark.parametrize("events", [None, [], "backchannel-logout", {}, {"http://example.com/other": {}},
                                    {LOGOUT_EVENT: None}, {LOGOUT_EVENT: "yes"}, {LOGOUT_EVENT: []}])
async def test_events_claim_must_hold_the_logout_event_object(events: Any) -> None:
    token = claims() | {"events": events} if events is not None else claims(events=None)
    await _rejected(sign(token), "logout event missing")


async def test_extra_events_and_members_are_fine() -> None:
    events = {LOGOUT_EVENT: {"reason": "x"}, "http://example.com/other": {}}
    assert await make_verifier().logout_token(sign(claims(events=events)))


async def test_neither_sid_nor_sub_rejected() -> None:
    await _rejected(sign(claims(sid=None, sub=None)), "sid and sub missing")


@pytest.mark.parametrize("bad", [{"sid": ""}, {"sid": 7}, {"sub": ""}, {"sid": None, "sub": ""}])
async def test_empty_or_non_string_sid_or_sub_rejected(bad: dict[str, Any]) -> None:
    await _rejected(sign(claims() | bad), "sid or sub malformed")


@pytest.mark.parametrize("nonce", ["n-1", "", None])
async def test_nonce_present_rejected(nonce: str | None) -> None:
    """An ID token (which always has a nonce after a login) must never work as a logout token."""
    await _rejected(sign(claims() | {"nonce": nonce}), "nonce present")


@pytest.mark.parametrize("jti", [None, ""])
async def test_jti_missing_rejected(jti: str | None) -> None:
    await _rejected(sign(claims() | {"jti": jti} if jti is not None else claims(jti=None)), "jti missing")


async def test_malformed_token_rejected() -> None:
    await _rejected("not.a.jwt", "malformed token")
