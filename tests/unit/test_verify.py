"""TokenVerifier: every ID-token rejection of oidc-behaviour.md, each failing if its check is removed."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from gateway.errors import InvalidToken
from gateway.oidc.jwks import KeySet
from gateway.oidc.verify import TokenVerifier, token_hash

ISSUER = "https://op.example.com"
CLIENT_ID = "gateway"
SECRET = "client-secret-0123456789abcdef0123"
NOW = 1_800_000_000.0

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private_key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": alg}


JWKS = {"keys": [_jwk(RSA_KEY, "rsa1", "RS256"), _jwk(EC_KEY, "ec1", "ES256")]}


def make_verifier(algs: list[str] | None = None, *, secret: str | None = SECRET,
                  jwks: dict[str, Any] | None = None, clock: Callable[[], float] = lambda: NOW,
                  cls: type[TokenVerifier] = TokenVerifier) -> TokenVerifier:
    keys = KeySet(None, lambda: None, min_refresh_interval=3600, clock=clock)  # type: ignore[arg-type]
    keys.load(jwks or JWKS)
    return cls(issuer=ISSUER, client_id=CLIENT_ID, client_secret=secret,
               id_token_algs=algs or ["RS256", "ES256", "HS256"], bearer_algs=["RS256"],
               bearer_audiences=["api"], keys=keys, clock_skew=60, clock=clock)


def claims(**overrides: Any) -> dict[str, Any]:
    base = {"iss": ISSUER, "sub": "alice", "aud": CLIENT_ID, "exp": NOW + 300, "iat": NOW - 10, "nonce": "n-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], *, alg: str = "RS256", kid: str | None = "rsa1", key: Any = None) -> str:
    if key is None:
        key = {"RS256": RSA_KEY, "ES256": EC_KEY, "HS256": SECRET.encode()}[alg]
    headers = {"kid": kid} if kid else {}
    return jwt.encode(payload, key, algorithm=alg, headers=headers)


async def test_valid_rs256_id_token_passes() -> None:
    got = await make_verifier().id_token(sign(claims()), nonce="n-1")
    assert got["sub"] == "alice"


async def test_valid_es256_and_hs256_id_tokens_pass() -> None:
    verifier = make_verifier()
    assert (await verifier.id_token(sign(claims(), alg="ES256", kid="ec1"), nonce="n-1"))["sub"] == "alice"
    assert (await verifier.id_token(sign(claims(), alg="HS256", kid=None), nonce="n-1"))["sub"] == "alice"


async def _rejected(token: str, reason: str, verifier: TokenVerifier | None = None, **kwargs: Any) -> None:
    kwargs.setdefault("nonce", "n-1")
    with pytest.raises(InvalidToken) as info:
        await (verifier or make_verifier()).id_token(token, **kwargs)
    assert info.value.detail == reason


async def test_alg_none_rejected() -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none")
    await _rejected(unsigned, "signing algorithm not allowed")


async def test_alg_outside_allow_list_rejected() -> None:
    await _rejected(sign(claims(), alg="HS256", kid=None), "signing algorithm not allowed", make_verifier(["RS256"]))
    await _rejected(sign(claims(), alg="ES256", kid="ec1"), "signing algorithm not allowed", make_verifier(["RS256"]))


async def test_hs256_signed_with_the_public_key_rejected() -> None:
    """Key confusion: an HS256 token whose 'secret' is the OP's public RSA key must not verify."""
    public_pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT","kid":"rsa1"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    mac = hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest()
    forged = (header + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    await _rejected(forged, "bad signature")
    await _rejected(forged, "signing algorithm not allowed", make_verifier(["RS256"]))


async def test_bad_signature_rejected() -> None:
    await _rejected(sign(claims(), key=OTHER_RSA_KEY), "bad signature")


async def test_hs256_with_wrong_secret_rejected() -> None:
    await _rejected(sign(claims(), alg="HS256", kid=None, key=b"another-secret-0123456789abcdefgh"), "bad signature")


async def test_unknown_kid_rejected() -> None:
    await _rejected(sign(claims(), kid="nope"), "no matching signing key")


async def test_rsa_kid_used_with_ec_alg_rejected() -> None:
    await _rejected(sign(claims(), alg="ES256", kid="rsa1"), "no matching signing key")


async def test_issuer_mismatch_rejected() -> None:
    await _rejected(sign(claims(iss="https://evil.example.com")), "issuer mismatch")
    await _rejected(sign(claims(iss=ISSUER + "/")), "issuer mismatch")


async def test_audience_mismatch_rejected() -> None:
    await _rejected(sign(claims(aud="someone-else")), "audience mismatch")
    await _rejected(sign(claims(aud=None)), "audience mismatch")


async def test_multiple_audiences_require_azp() -> None:
    await _rejected(sign(claims(aud=[CLIENT_ID, "other"])), "authorized party mismatch")
    await _rejected(sign(claims(aud=[CLIENT_ID, "other"], azp="other")), "authorized party mismatch")
    ok = await make_verifier().id_token(sign(claims(aud=[CLIENT_ID, "other"], azp=CLIENT_ID)), nonce="n-1")
    assert ok["azp"] == CLIENT_ID


async def test_expired_rejected_beyond_skew_only() -> None:
    await _rejected(sign(claims(exp=NOW - 61)), "token expired")
    assert await make_verifier().id_token(sign(claims(exp=NOW - 30)), nonce="n-1")


async def test_exp_missing_rejected() -> None:
    await _rejected(sign(claims(exp=None)), "token expired")


async def test_iat_in_future_rejected_and_missing_rejected() -> None:
    await _rejected(sign(claims(iat=NOW + 120)), "issued-at missing or in the future")
    await _rejected(sign(claims(iat=None)), "issued-at missing or in the future")
    assert await make_verifier().id_token(sign(claims(iat=NOW + 30)), nonce="n-1")


async def test_nbf_in_future_rejected() -> None:
    await _rejected(sign(claims(nbf=NOW + 120)), "token not yet valid")


async def test_nonce_mismatch_and_missing_rejected() -> None:
    await _rejected(sign(claims(nonce="other")), "nonce mismatch")
    await _rejected(sign(claims(nonce=None)), "nonce mismatch")


async def test_sub_missing_rejected() -> None:
    await _rejected(sign(claims(sub=None)), "subject missing")


async def test_at_hash_checked_when_present() -> None:
    good = token_hash("the-access-token", "RS256")
    verifier = make_verifier()
    assert await verifier.id_token(sign(claims(at_hash=good)), nonce="n-1", access_token="the-access-token")
    await _rejected(sign(claims(at_hash=good)), "at_hash mismatch", access_token="another-token")


async def test_c_hash_required_when_flow_demands() -> None:
    await _rejected(sign(claims()), "c_hash missing", code="the-code", require_c_hash=True)
    await _rejected(sign(claims(c_hash=token_hash("x", "RS256"))), "c_hash mismatch", code="the-code")
    ok = sign(claims(c_hash=token_hash("the-code", "RS256")))
    assert await make_verifier().id_token(ok, nonce="n-1", code="the-code", require_c_hash=True)


def test_token_hash_matches_spec_example() -> None:
    # OIDC Core §A.3 example: access_token jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y → at_hash 77QmUPtjPfzWtF2AnpK9RQ
    assert token_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y", "RS256") == "77QmUPtjPfzWtF2AnpK9RQ"


async def test_malformed_token_rejected() -> None:
    await _rejected("not-a-jwt", "malformed token")


@pytest.mark.parametrize("header", [b"", b"not base64!", b"[1, 2]", b'{"alg": "RS256"'])
async def test_malformed_header_rejected(header: bytes) -> None:
    _, payload, signature = sign(claims()).split(".")
    head = base64.urlsafe_b64encode(header).rstrip(b"=").decode() if header != b"not base64!" else "not base64!"
    await _rejected(f"{head}.{payload}.{signature}", "malformed token")


async def test_malformed_payload_or_signature_rejected_after_the_header() -> None:
    # Only the header is read before PyJWT's own strict parse: the rest is still checked by it.
    head, payload, signature = sign(claims()).split(".")
    await _rejected(f"{head}.{payload}!.{signature}", "malformed token")
    await _rejected(f"{head}.{payload}.{signature}!", "malformed token")
    await _rejected(f"{head}.{payload}", "malformed token")


async def test_padded_header_segment_still_verifies() -> None:
    # Some issuers (AWS ALB) pad their segments; PyJWT accepts that, and so does the header read.
    def b64(data: bytes, *, pad: bool = False) -> str:
        encoded = base64.urlsafe_b64encode(data).decode()
        return encoded if pad else encoded.rstrip("=")

    head = b64(b'{"alg":"RS256","kid":"rsa1"}', pad=True)
    assert head.endswith("=")
    signing_input = f"{head}.{b64(json.dumps(claims()).encode())}"
    signature = RSA_KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    token = f"{signing_input}.{b64(signature)}"
    assert (await make_verifier().id_token(token, nonce="n-1"))["sub"] == "alice"


async def test_bearer_audience_and_issuer() -> None:
    verifier = make_verifier()
    assert (await verifier.bearer(sign(claims(aud="api", nonce=None))))["sub"] == "alice"
    with pytest.raises(InvalidToken):
        await verifier.bearer(sign(claims(aud=CLIENT_ID)))
    with pytest.raises(InvalidToken):  # HS256 is never a Bearer algorithm
        await verifier.bearer(sign(claims(aud="api"), alg="HS256", kid=None))
    with pytest.raises(InvalidToken):
        await verifier.bearer(sign(claims(aud="api", exp=time.time() - 3600 * 24 * 365 * 10)))


async def test_bearer_rejects_alg_none_and_hs256_signed_with_the_public_key() -> None:
    verifier = make_verifier()
    with pytest.raises(InvalidToken):
        await verifier.bearer(jwt.encode(claims(aud="api", nonce=None), None, algorithm="none"))
    public_pem = RSA_KEY.public_key().public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT","kid":"rsa1"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims(aud="api", nonce=None)).encode()).rstrip(b"=")
    mac = hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest()
    forged = (header + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    with pytest.raises(InvalidToken) as info:
        await verifier.bearer(forged)
    # HS* is never a Bearer algorithm; an HS token also reads as an ID token, refused by default.
    assert info.value.detail in ("signing algorithm not allowed", "ID token not accepted")
