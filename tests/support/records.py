"""Read and write the gateway's encrypted Redis records from tests, as the gateway's own RedisStore does."""

from __future__ import annotations

import json
from typing import Any

from gateway.config import Settings
from gateway.session.crypto import RecordCipher


def cipher_for(settings: Settings) -> RecordCipher:
    secrets = settings.session.encryption_secrets or [settings.session.cookie_secret]
    return RecordCipher([s.get_secret_value().encode() for s in secrets])


def open_record(settings: Settings, key: str | bytes, raw: bytes) -> dict[str, Any]:
    name = key.decode() if isinstance(key, bytes) else key
    return json.loads(cipher_for(settings).open(raw, key=name))  # type: ignore[no-any-return]


def seal_record(settings: Settings, key: str, record: dict[str, Any]) -> bytes:
    return cipher_for(settings).seal(json.dumps(record).encode(), key=key)
