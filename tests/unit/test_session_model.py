"""Session records: the serialised form is stable (records written by earlier versions compare equal in the
store's compare-and-set) and round-trips."""

from __future__ import annotations

import json
from dataclasses import asdict

from gateway.oidc.client import AuthRequest
from gateway.session.model import PendingLogin, Session


def full_session() -> Session:
    return Session(sub="alice", iss="http://op", created_at=1.5, last_seen=2.5,
                   claims={"email": "alice@example.com", "groups": ["a", "b"], "address": {"country": "DE"}},
                   access_token="at", refresh_token="rt", id_token="it", expires_at=3.5, op_sid="sid-1")


def test_dumps_is_the_asdict_json_byte_for_byte() -> None:
    for session in (full_session(), Session(sub="bob", iss="http://op", created_at=1.0, last_seen=1.0)):
        assert session.dumps() == json.dumps(asdict(session), separators=(",", ":")).encode()


def test_round_trip() -> None:
    session = full_session()
    assert Session.loads(session.dumps()) == session
    assert Session.loads(session.dumps().decode()) == session


def test_pending_login_dumps_is_the_asdict_json_byte_for_byte() -> None:
    request = AuthRequest(state="st", nonce="no", code_verifier="cv", rd="/back?x=1", response_type="code")
    for pending in (PendingLogin(request=request, binding="b" * 64, created_at=1.5),
                    PendingLogin(request=AuthRequest(state="s", nonce="n", code_verifier=None), binding="c",
                                 created_at=2.0, form=(("a", "1"), ("b", "2")))):
        expected: dict[str, object] = {"request": asdict(pending.request), "binding": pending.binding,
                                       "created_at": pending.created_at}
        if pending.form is not None:
            expected["form"] = [list(pair) for pair in pending.form]
        assert pending.dumps() == json.dumps(expected, separators=(",", ":")).encode()
        assert PendingLogin.loads(pending.dumps()) == pending
