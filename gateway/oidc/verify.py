"""TokenVerifier: ID tokens (OIDC Core §3.1.3.7, §3.3.2.12) and Bearer JWT access tokens (RFC 9068).

Trusts: signatures by a key from the provider's JWKS, or, for HS256/384/512, the client secret
(OIDC Core §10.1; Authing's default). A signature that fails under a known `kid` is retried once
after a (rate-limited) JWKS re-fetch: an OP restarted with fresh keys often reuses its kids.
Rejects, each with InvalidToken and a short fixed reason:
an `alg` outside the configured allow-list (`none` can never be in it, so no alg=none and no HS/RS
confusion: the key type is chosen by the allow-listed alg, never by the token), a bad signature,
`iss` not exactly the issuer, `aud` without our client_id, several audiences without `azp` equal to
our client_id, `exp` in the past or `iat` missing or in the future (both with the clock skew),
`nbf` in the future, a missing `sub`, a `nonce` other than this login's, and a wrong or (where the
flow requires it) missing `at_hash` / `c_hash`.

Bearer JWTs: the unverified `iss` only selects whose keys, algorithms and audiences apply (the OP's,
or one of access.bearer.trusted_issuers); an unknown issuer is rejected before any key is fetched, and
the signature then decides. A token that looks like an ID token (HS* alg, or `nonce` / `at_hash` /
`c_hash` / `s_hash`, or `aud` with our client_id but not among the bearer audiences) is rejected unless
access.bearer.accept_id_tokens is on; then it is verified exactly as an ID token (ID-token alg
allow-list, so HS256 only when oidc.id_token_signing_algs has it), without a nonce to compare.

Logout Tokens (Back-Channel Logout 1.0 §2.6) go through the same decoding (ID-token alg allow-list,
JWKS or client secret) and the same iss/aud/iat/exp rules, except that `exp` may be absent (then the
token lives LOGOUT_TOKEN_MAX_AGE from `iat`) and `sub` is optional. Also rejected: a `typ` header
other than `logout+jwt` or the generic `JWT` (§2.4, RFC 7515 §4.1.9), `events` without a JSON object
under the back-channel-logout event, neither `sid` nor `sub`, any `nonce` (§2.4: so an ID token can
never pass as a logout token), and a missing `jti`. Replay (§2.6 step 8) is the caller's check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import jwt

from gateway.errors import InvalidToken
from gateway.oidc.jwks import KeySet

__all__ = ["LOGOUT_EVENT", "LOGOUT_TOKEN_MAX_AGE", "BearerIssuer", "Claims", "LogoutToken", "TokenVerifier",
           "token_hash"]

Claims = dict[str, Any]

_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_MAX_AGE = 600.0  # seconds after `iat` that a logout token without `exp` is accepted
# BCL 1.0 §2.4 recommends typ=logout+jwt; no typ and the generic "JWT" (Keycloak before 25, older
# Authentik) are accepted too: the events claim and the nonce ban already tell ID tokens apart (§4.1).
_LOGOUT_TYPES: frozenset[str | None] = frozenset({None, "logout+jwt", "jwt"})
_ID_TOKEN_ONLY_CLAIMS = ("nonce", "at_hash", "c_hash", "s_hash")  # OIDC Core §2, §3.3.2.11; never in RFC 9068


_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")  # PyJWT accepts trailing padding (AWS ALB sends it)


class _BadSignature(InvalidToken):
    default_detail = "bad signature"


def _unverified_header(raw: str) -> dict[str, Any]:
    """The JOSE header, read only to choose the algorithm and key: PyJWT then parses and checks the whole
    token itself (with that algorithm only). Reading just the header here spares a second strict parse
    of the whole token (jwt.get_unverified_header's), which costs more than the RSA signature check."""
    head, dot, _ = raw.partition(".")
    if not dot or not _BASE64URL.fullmatch(head):
        raise InvalidToken("malformed token")
    try:
        head = head.rstrip("=")
        header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, binascii.Error):
        raise InvalidToken("malformed token") from None
    if not isinstance(header, dict):
        raise InvalidToken("malformed token")
    return header


def _signed_claims(raw: str, key: Any, alg: str) -> Claims:
    """The payload when the signature verifies with `key`; _BadSignature or InvalidToken otherwise."""
    try:
        claims: Claims = jwt.decode(
            raw, key, algorithms=[alg],
            # Time and audience checks are ours (injected clock, azp rule); signature is PyJWT's.
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                     "verify_aud": False, "verify_iss": False},
        )
    except jwt.InvalidSignatureError:
        raise _BadSignature() from None
    except jwt.PyJWTError:
        raise InvalidToken("malformed token") from None
    return claims


@dataclass(frozen=True, slots=True)
class BearerIssuer:
    """Whose Bearer JWTs verify how: the issuer, its keys, accepted algorithms and audiences."""

    issuer: str
    keys: KeySet
    algorithms: frozenset[str]
    audiences: frozenset[str]


@dataclass(frozen=True, slots=True)
class LogoutToken:
    """A verified logout token: whose sessions to end, and until when its `jti` must be remembered."""

    iss: str
    sub: str | None
    sid: str | None
    jti: str
    not_after: float  # the verifier rejects this token from then on (exp or iat + max age, plus skew)


def token_hash(value: str, alg: str) -> str:
    """at_hash / c_hash: base64url of the left half of the hash matching the JWS alg (OIDC Core §3.3.2.11)."""
    digest_fn = hashlib.sha512 if alg == "EdDSA" else _HASHES[alg[-3:]]
    digest = digest_fn(value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


class TokenVerifier:
    def __init__(self, *, issuer: str, client_id: str, client_secret: str | None,
                 id_token_algs: Collection[str], bearer_algs: Collection[str],
                 bearer_audiences: Collection[str], keys: KeySet, clock_skew: float,
                 clock: Callable[[], float], trusted_issuers: Collection[BearerIssuer] = (),
                 accept_id_tokens: bool = False) -> None:
        self._issuer = issuer
        self._client_id = client_id
        self._secret = client_secret.encode() if client_secret else None
        self._id_algs = frozenset(id_token_algs)
        self._bearer_algs = frozenset(bearer_algs)
        self._bearer_audiences = frozenset(bearer_audiences)
        self._keys = keys
        self._skew = clock_skew
        self._clock = clock
        own = BearerIssuer(issuer, keys, self._bearer_algs, self._bearer_audiences)
        self._bearer_issuers = {i.issuer: i for i in trusted_issuers} | {issuer: own}
        self._accept_id_tokens = accept_id_tokens

    async def _decode(self, raw: str, allowed: frozenset[str], typs: frozenset[str | None] | None = None,
                      keys: KeySet | None = None) -> tuple[str, Claims]:
        header = _unverified_header(raw)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in allowed:
            raise InvalidToken("signing algorithm not allowed")
        if typs is not None and _media_type(header.get("typ")) not in typs:
            raise InvalidToken("token type not allowed")
        if alg.startswith("HS"):
            if self._secret is None:
                raise InvalidToken("signing algorithm not allowed")
            return alg, _signed_claims(raw, self._secret, alg)
        kid = header.get("kid")
        kid = kid if isinstance(kid, str) else None
        keyset = keys or self._keys
        try:
            return alg, _signed_claims(raw, await keyset.key_for(kid, alg), alg)
        except _BadSignature:
            # A known kid whose signature fails: the OP may have replaced the key under the same kid (an
            # OP restarted with fresh keys). One re-fetch, rate-limited like an unknown kid's, then retry.
            if not await keyset.refresh():
                raise InvalidToken("bad signature") from None
        try:
            return alg, _signed_claims(raw, await keyset.key_for(kid, alg), alg)
        except _BadSignature:
            raise InvalidToken("bad signature") from None

    def _check_time(self, claims: Claims, *, require_iat: bool, require_exp: bool = True) -> None:
        now = self._clock()
        exp = claims.get("exp")
        if (exp is not None or require_exp) and (not _is_number(exp) or exp + self._skew <= now):
            raise InvalidToken("token expired")
        iat = claims.get("iat")
        if iat is None and not require_iat:
            pass
        elif not _is_number(iat) or iat - self._skew > now:
            raise InvalidToken("issued-at missing or in the future")
        nbf = claims.get("nbf")
        if nbf is not None and (not _is_number(nbf) or nbf - self._skew > now):
            raise InvalidToken("token not yet valid")

    def _check_issuer_subject(self, claims: Claims) -> None:
        self._check_issuer(claims)
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken("subject missing")

    def _check_issuer(self, claims: Claims) -> None:
        if claims.get("iss") != self._issuer:
            raise InvalidToken("issuer mismatch")

    def _check_audience(self, claims: Claims) -> None:
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if self._client_id not in audiences:
            raise InvalidToken("audience mismatch")
        # OIDC Core §3.1.3.7 (4)-(5): several audiences need azp == client_id.
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != self._client_id:
            raise InvalidToken("authorized party mismatch")

    async def id_token(self, raw: str, *, nonce: str | None, access_token: str | None = None,
                       code: str | None = None, require_at_hash: bool = False,
                       require_c_hash: bool = False) -> Claims:
        alg, claims = await self._decode(raw, self._id_algs)
        self._check_issuer_subject(claims)
        self._check_audience(claims)
        self._check_time(claims, require_iat=True)
        if nonce is not None:
            got = claims.get("nonce")
            if not isinstance(got, str) or not hmac.compare_digest(got, nonce):
                raise InvalidToken("nonce mismatch")
        _check_hash(claims, "at_hash", access_token, alg, required=require_at_hash)
        _check_hash(claims, "c_hash", code, alg, required=require_c_hash)
        return claims

    async def bearer(self, raw: str) -> Claims:
        """A JWT access token presented by an API client (RFC 9068 §4), or an ID token when allowed."""
        try:
            header = jwt.get_unverified_header(raw)
            unverified = jwt.decode(raw, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        iss = unverified.get("iss")
        trusted = self._bearer_issuers.get(iss) if isinstance(iss, str) else None
        if trusted is None:
            raise InvalidToken("issuer mismatch")
        if iss == self._issuer and self._looks_like_id_token(header, unverified):
            if not self._accept_id_tokens:
                raise InvalidToken("ID token not accepted")
            return await self.id_token(raw, nonce=None)
        _, claims = await self._decode(raw, trusted.algorithms, keys=trusted.keys)
        if claims.get("iss") != trusted.issuer:
            raise InvalidToken("issuer mismatch")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken("subject missing")
        aud = claims.get("aud")
        audiences = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
        if not audiences & trusted.audiences:
            raise InvalidToken("audience mismatch")
        self._check_time(claims, require_iat=False)
        return claims

    def introspected(self, response: Claims) -> Claims:
        """An active RFC 7662 response as claims: iss, aud and exp are checked where present (§2.2)."""
        if "iss" in response and response["iss"] != self._issuer:
            raise InvalidToken("issuer mismatch")
        aud = response.get("aud")
        if aud is not None:
            audiences = {aud} if isinstance(aud, str) else set(aud) if isinstance(aud, list) else set()
            # The OP's own client_id counts too: it introspected a token that was issued to us.
            if not audiences & (self._bearer_audiences | {self._client_id}):
                raise InvalidToken("audience mismatch")
        self._check_time(response, require_iat=False, require_exp=False)
        claims = dict(response)
        # client_credentials tokens have no user: the subject is the client (as for JWT access tokens).
        sub = response.get("sub") or response.get("client_id")
        if not isinstance(sub, str) or not sub:
            raise InvalidToken("subject missing")
        claims["sub"] = sub
        return claims

    def _looks_like_id_token(self, header: dict[str, Any], claims: Claims) -> bool:
        if _media_type(header.get("typ")) == "at+jwt":  # RFC 9068 §2.1
            return False
        alg = header.get("alg")
        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        return ((isinstance(alg, str) and alg.startswith("HS"))
                or any(name in claims for name in _ID_TOKEN_ONLY_CLAIMS)
                or (self._client_id in audiences and self._client_id not in self._bearer_audiences))

    async def logout_token(self, raw: str) -> LogoutToken:
        """A Back-Channel Logout token (BCL 1.0 §2.6 steps 2-7), verified like an ID token where it says so."""
        _, claims = await self._decode(raw, self._id_algs, _LOGOUT_TYPES)
        self._check_issuer(claims)
        self._check_audience(claims)
        self._check_time(claims, require_iat=True, require_exp=False)
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
            raise InvalidToken("logout event missing")
        sid, sub = claims.get("sid"), claims.get("sub")
        if sid is None and sub is None:
            raise InvalidToken("sid and sub missing")
        if not all(value is None or (isinstance(value, str) and value) for value in (sid, sub)):
            raise InvalidToken("sid or sub malformed")
        if "nonce" in claims:
            raise InvalidToken("nonce present")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidToken("jti missing")
        exp = claims.get("exp")
        not_after = (exp if exp is not None else claims["iat"] + LOGOUT_TOKEN_MAX_AGE) + self._skew
        if not_after <= self._clock():
            raise InvalidToken("token expired")
        return LogoutToken(iss=self._issuer, sub=sub, sid=sid, jti=jti, not_after=float(not_after))


def _media_type(typ: Any) -> str | None:
    """RFC 7515 §4.1.9: `typ` compares case-insensitively and `application/` may be left out."""
    if typ is None:
        return None
    if not isinstance(typ, str):
        return ""
    return typ.lower().removeprefix("application/")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_hash(claims: Claims, name: str, value: str | None, alg: str, *, required: bool) -> None:
    got = claims.get(name)
    if got is None:
        if required:
            raise InvalidToken(f"{name} missing")
        return
    if value is None:
        return  # nothing to compare with in this flow
    if not isinstance(got, str) or not hmac.compare_digest(got, token_hash(value, alg)):
        raise InvalidToken(f"{name} mismatch")
