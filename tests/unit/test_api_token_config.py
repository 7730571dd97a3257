"""Config rules of the API-token keys: trusted issuers, identity assertion keys."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.auth.assertion import IdentityAssertion
from gateway.auth.identity import Identity
from gateway.config import settings_from_mapping
from tests.conftest import deep_merge
from tests.unit.test_config import minimal, problems_of


def _with(overrides: dict[str, Any]) -> dict[str, Any]:
    return deep_merge(minimal(), overrides)


def test_trusted_issuer_refuses_hs_algorithms_and_empty_audiences() -> None:
    trusted = {"issuer": "https://other.example", "jwks_uri": "https://other.example/jwks",
               "audiences": [], "algorithms": ["HS256"]}
    keys = {path for path, _ in problems_of(_with({"access": {"bearer": {"trusted_issuers": [trusted]}}}))}
    assert {"access.bearer.trusted_issuers[0].audiences", "access.bearer.trusted_issuers[0].algorithms"} <= keys


def test_assertion_with_workers_needs_a_configured_key() -> None:
    raw = _with({"workers": 2, "identity_assertion": {"enabled": True}})
    assert [p for p, _ in problems_of(raw)] == ["identity_assertion.private_key"]


def test_assertion_key_must_be_pem() -> None:
    raw = _with({"identity_assertion": {"enabled": True, "private_key": "not a key"}})
    assert [p for p, _ in problems_of(raw)] == ["identity_assertion.private_key"]


def test_configured_assertion_key_gives_the_same_kid_on_every_replica() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    settings = settings_from_mapping(_with({"identity_assertion": {"enabled": True, "private_key": pem}}), environ={})
    replicas = [IdentityAssertion(settings.identity_assertion, issuer="https://gw", clock=lambda: 1000.0)
                for _ in range(2)]
    assert replicas[0]._jwks == replicas[1]._jwks  # noqa: SLF001 - what /.well-known/jwks.json serves
    assert replicas[0].sign(Identity(sub="a")) != ""
