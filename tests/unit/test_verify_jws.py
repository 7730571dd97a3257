"""The compact-JWS decoding behind TokenVerifier (verify._signed_claims) answers exactly as jwt.decode did
with the verifier's options: the same tokens accepted with the same claims, the same ones rejected, and a
failing signature told apart from a malformed token (it triggers the JWKS re-fetch). Keys made in-test."""

from __future__ import annotations

import base64
import json
import warnings
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.errors import InvalidToken
from gateway.oidc import verify

OPTIONS = {"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False,
           "verify_iss": False}
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
SECRET = b"gateway-hs-secret-0123456789abcdef01"
CLAIMS = {"iss": "http://op", "sub": "alice", "aud": "gateway", "iat": 1, "exp": 2, "nonce": "n-1",
          "name": "Alice Ünicode", "groups": ["a", "b"]}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(private: Any, alg: str) -> jwt.PyJWK:
    public = json.loads(jwt.get_algorithm_by_name(alg).to_jwk(private.public_key()))
    return jwt.PyJWK({**public, "alg": alg, "kid": "k1"})


RS256 = _jwk(RSA_KEY, "RS256")
ES256 = _jwk(EC_KEY, "ES256")


def _sign(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, *, alg: str = "RS256",
          key: Any = RSA_KEY) -> str:
    """A token from raw parts (any header and payload bytes), signed with `alg` over what is sent."""
    head = _b64(header if isinstance(header, bytes) else json.dumps(header).encode())
    body = _b64(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    algorithm = jwt.get_algorithm_by_name(alg)
    signature = algorithm.sign(f"{head}.{body}".encode(), algorithm.prepare_key(key))
    return f"{head}.{body}.{_b64(signature)}"


def _edit(token: str, index: int, change: Callable[[str], str]) -> str:
    parts = token.split(".")
    parts[index] = change(parts[index])
    return ".".join(parts)


def _flip_last(segment: str) -> str:  # same length, other low bits: non-canonical or another value
    return segment[:-1] + ("B" if segment[-1] != "B" else "C")


GOOD = _sign({"alg": "RS256", "typ": "JWT", "kid": "k1"}, CLAIMS)
CASES: dict[str, tuple[str, Any, str]] = {
    "valid RS256": (GOOD, RS256, "RS256"),
    "valid ES256": (_sign({"alg": "ES256"}, CLAIMS, alg="ES256", key=EC_KEY), ES256, "ES256"),
    "valid HS256 secret": (_sign({"alg": "HS256"}, CLAIMS, alg="HS256", key=SECRET), SECRET, "HS256"),
    "HS256 with a wrong secret": (_sign({"alg": "HS256"}, CLAIMS, alg="HS256", key=b"x" * 40), SECRET, "HS256"),
    "other key": (_sign({"alg": "RS256"}, CLAIMS, key=OTHER_RSA_KEY), RS256, "RS256"),
    "payload swapped": (_edit(GOOD, 1, lambda _: _b64(b'{"sub":"mallory"}')), RS256, "RS256"),
    "signature truncated": (_edit(GOOD, 2, lambda s: s[:-4]), RS256, "RS256"),
    "signature empty": (_edit(GOOD, 2, lambda _: ""), RS256, "RS256"),
    "signature non-canonical": (_edit(GOOD, 2, _flip_last), RS256, "RS256"),
    "header non-canonical": (_edit(GOOD, 0, _flip_last), RS256, "RS256"),
    "payload non-canonical": (_edit(GOOD, 1, _flip_last), RS256, "RS256"),
    "two segments": (GOOD.rsplit(".", 1)[0], RS256, "RS256"),
    "four segments": (GOOD + ".e30", RS256, "RS256"),
    "empty": ("", RS256, "RS256"),
    "dots only": ("..", RS256, "RS256"),
    "bad character": (_edit(GOOD, 1, lambda s: s[:5] + "+" + s[6:]), RS256, "RS256"),
    "non-ascii character": (_edit(GOOD, 1, lambda s: s[:5] + "é" + s[6:]), RS256, "RS256"),
    "whitespace": (GOOD + " ", RS256, "RS256"),
    "header not json": (_sign(b"{alg", CLAIMS), RS256, "RS256"),
    "header a list": (_sign(b'["RS256"]', CLAIMS), RS256, "RS256"),
    "payload not json": (_sign({"alg": "RS256"}, b"{sub"), RS256, "RS256"),
    "payload a list": (_sign({"alg": "RS256"}, b"[1]"), RS256, "RS256"),
    "payload utf-16": (_sign({"alg": "RS256"}, json.dumps(CLAIMS).encode("utf-16")), RS256, "RS256"),
    "payload deeply nested": (_sign({"alg": "RS256"}, b"[" * 100_000), RS256, "RS256"),
    "header alg none": (_sign({"alg": "none"}, CLAIMS), RS256, "RS256"),
    "header alg other": (_sign({"alg": "RS384"}, CLAIMS, alg="RS384"), RS256, "RS256"),
    "header without alg": (_sign({"typ": "JWT"}, CLAIMS), RS256, "RS256"),
    "key for another alg": (_sign({"alg": "RS384"}, CLAIMS, alg="RS384"), RS256, "RS384"),
    "kid a number": (_sign({"alg": "RS256", "kid": 7}, CLAIMS), RS256, "RS256"),
    "crit b64 present": (_sign({"alg": "RS256", "b64": True, "crit": ["b64"]}, CLAIMS), RS256, "RS256"),
    "crit b64 absent": (_sign({"alg": "RS256", "crit": ["b64"]}, CLAIMS), RS256, "RS256"),
    "crit unknown": (_sign({"alg": "RS256", "exp": 1, "crit": ["exp"]}, CLAIMS), RS256, "RS256"),
    "crit empty": (_sign({"alg": "RS256", "crit": []}, CLAIMS), RS256, "RS256"),
    "crit a string": (_sign({"alg": "RS256", "b64": True, "crit": "b64"}, CLAIMS), RS256, "RS256"),
    "crit a number": (_sign({"alg": "RS256", "crit": [1]}, CLAIMS), RS256, "RS256"),
    "b64 false": (_sign({"alg": "RS256", "b64": False, "crit": ["b64"]}, CLAIMS), RS256, "RS256"),
    "b64 false, empty payload": (_edit(_sign({"alg": "RS256", "b64": False, "crit": ["b64"]}, CLAIMS), 1,
                                       lambda _: ""), RS256, "RS256"),
    "sub a number": (_sign({"alg": "RS256"}, {**CLAIMS, "sub": 7}), RS256, "RS256"),
    "jti a number": (_sign({"alg": "RS256"}, {**CLAIMS, "jti": 7}), RS256, "RS256"),
    "jti a string": (_sign({"alg": "RS256"}, {**CLAIMS, "jti": "j"}), RS256, "RS256"),
    "no claims at all": (_sign({"alg": "RS256"}, {}), RS256, "RS256"),
}
for pad in ("=", "==", "==="):  # AWS ALB pads its segments; PyJWT takes 1-2 completing `=` only
    for index in range(3):
        CASES[f"segment {index} + {pad!r}"] = (_edit(GOOD, index, lambda s, p=pad: s + p), RS256, "RS256")
for index in range(3):  # exactly the `=` that complete the segment's last quantum
    CASES[f"segment {index} padded"] = (_edit(GOOD, index, lambda s: s + "=" * (-len(s) % 4)), RS256, "RS256")


def _pyjwt(token: str, key: Any, alg: str) -> tuple[str, Any]:
    try:
        return "ok", jwt.decode(token, key, algorithms=[alg], options=OPTIONS)  # type: ignore[arg-type]
    except jwt.InvalidSignatureError:
        return "bad signature", None
    except jwt.PyJWTError:
        return "malformed", None


def _ours(token: str, key: Any, alg: str) -> tuple[str, Any]:
    try:
        return "ok", verify._signed_claims(token, key, alg)
    except verify._BadSignature:
        return "bad signature", None
    except InvalidToken as exc:
        assert exc.detail == "malformed token"
        return "malformed", None


@pytest.mark.parametrize("name", list(CASES))
def test_same_answer_as_jwt_decode(name: str) -> None:
    token, key, alg = CASES[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        expected = _pyjwt(token, key, alg)
        assert _ours(token, key, alg) == expected


def test_the_corpus_covers_accepts_and_both_rejects() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        outcomes = {_pyjwt(*case)[0] for case in CASES.values()}
    assert outcomes == {"ok", "bad signature", "malformed"}


def test_a_short_hmac_secret_warns_as_pyjwt_does() -> None:
    token = _sign({"alg": "HS256"}, CLAIMS, alg="HS256", key=b"short")
    with pytest.warns(jwt.warnings.InsecureKeyLengthWarning):
        assert verify._signed_claims(token, b"short", "HS256")["sub"] == "alice"
