"""RecordCipher: session and pending-login records encrypted and authenticated at rest (AES-256-GCM).

Trusts: only a record that authenticates under one of the configured secrets *and* under the Redis
key it was read from (the key is the GCM associated data, so a record copied to another key, e.g.
another session id or a login state, does not open). Rejects anything else (tampered, truncated,
foreign key, unknown secret, plaintext from before encryption) with RecordUnreadable: the store then
treats the record as absent. Keys: HKDF-SHA256 (RFC 5869) per secret with their own info label,
never the cookie keys. The first secret encrypts, every secret decrypts (rotation: prepend the new).
Blob: version byte 0x01 | 96-bit random nonce (NIST SP 800-38D §8.2.2) | ciphertext + 128-bit tag.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["RecordCipher", "RecordUnreadable"]

_VERSION = b"\x01"
_NONCE_SIZE = 12
_INFO = b"oidc-gateway/record-encryption/v1"


class RecordUnreadable(Exception):
    """The stored record does not authenticate (never carries the record's content)."""


def _derive(secret: bytes) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret)
    return AESGCM(key)


class RecordCipher:
    def __init__(self, secrets: Sequence[bytes]) -> None:
        if not secrets:
            raise ValueError("at least one secret")
        self._aeads = [_derive(secret) for secret in secrets]

    def seal(self, plaintext: bytes, *, key: str) -> bytes:
        nonce = os.urandom(_NONCE_SIZE)
        return _VERSION + nonce + self._aeads[0].encrypt(nonce, plaintext, key.encode())

    def open(self, blob: bytes, *, key: str) -> bytes:
        if len(blob) < 1 + _NONCE_SIZE + 16 or blob[:1] != _VERSION:
            raise RecordUnreadable()
        nonce, body = blob[1:1 + _NONCE_SIZE], blob[1 + _NONCE_SIZE:]
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, body, key.encode())
            except InvalidTag:
                continue
        raise RecordUnreadable()
