"""OIDCClient.new_auth_request: what a login attempt sends and must remember is unguessable and well-formed."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gateway.config import Settings
from gateway.oidc.client import OIDCClient

# RFC 7636 §4.1: code_verifier = 43*128unreserved; state and nonce: base64url, no padding.
_UNRESERVED = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


def client(settings: Settings) -> OIDCClient:
    # new_auth_request touches neither the provider, the verifier nor the network.
    none: Any = None
    return OIDCClient(settings.oidc, none, none, none, redirect_uri=settings.redirect_uri, clock=lambda: 0.0)


def test_state_nonce_and_verifier_are_long_random_and_well_formed(settings_factory: Callable[..., Settings]) -> None:
    oidc = client(settings_factory())
    requests = [oidc.new_auth_request("/app") for _ in range(200)]
    for req in requests:
        assert req.rd == "/app" and req.response_type == "code"
        assert len(req.state) >= 43 and _BASE64URL.match(req.state)  # >= 256 bits
        assert len(req.nonce) >= 43 and _BASE64URL.match(req.nonce)
        assert req.code_verifier is not None and _UNRESERVED.match(req.code_verifier)
        assert len(req.code_verifier) >= 64  # >= 384 bits
    values = [v for req in requests for v in (req.state, req.nonce, req.code_verifier)]
    assert len(set(values)) == len(values)


def test_no_verifier_without_pkce(settings_factory: Callable[..., Settings]) -> None:
    assert client(settings_factory(oidc={"pkce": False})).new_auth_request("/").code_verifier is None
