"""access.rules: first match wins, methods, every requirement kind, public rules, scopes; each fails when removed."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.auth.identity import Identity
from gateway.auth.policy import AccessPolicy, resolve_dot_segments
from gateway.auth.rules import scopes_of
from gateway.config import AccessSettings
from gateway.errors import Forbidden


def policy(*rules: dict[str, Any], **kwargs: Any) -> AccessPolicy:
    return AccessPolicy(AccessSettings.model_validate({"rules": list(rules), **kwargs}))


def who(email: str | None = "alice@example.com", groups: tuple[str, ...] = (), **claims: Any) -> Identity:
    return Identity(sub="alice", email=email, groups=groups, claims={"sub": "alice", "email": email, **claims})


def allowed(p: AccessPolicy, identity: Identity, path: str, method: str = "GET") -> bool:
    try:
        p.check(identity, method, path)
    except Forbidden:
        return False
    return True


ADMIN = {"path": "^/admin/", "allowed_groups": ["admins"]}


@pytest.mark.parametrize(("rule", "identity", "expected"), [
    ({"path": "^/a", "allowed_emails": ["Alice@Example.com"]}, who(), True),
    ({"path": "^/a", "allowed_emails": ["bob@example.com"]}, who(), False),
    ({"path": "^/a", "allowed_emails": ["alice@example.com"]}, who(email_verified=False), False),
    ({"path": "^/a", "allowed_email_domains": ["example.com"]}, who(), True),
    ({"path": "^/a", "allowed_email_domains": ["example.org"]}, who(), False),
    ({"path": "^/a", "allowed_email_domains": ["example.com"]}, who(email=None), False),
    ({"path": "^/a", "allowed_groups": ["admins"]}, who(groups=("staff", "admins")), True),
    ({"path": "^/a", "allowed_groups": ["admins"]}, who(groups=("staff",)), False),
    ({"path": "^/a", "required_claims": {"dept": "sales"}}, who(dept="sales"), True),
    ({"path": "^/a", "required_claims": {"dept": "sales"}}, who(dept="salesx"), False),
    ({"path": "^/a", "required_claims": {"dept": "sales"}}, who(), False),
    ({"path": "^/a", "required_claims": {"roles": "editor"}}, who(roles=["viewer", "editor"]), True),
    ({"path": "^/a", "required_claims": {"mfa": True}}, who(mfa=True), True),
    ({"path": "^/a", "required_claims": {"mfa": True}}, who(mfa=1), False),
    ({"path": "^/a", "required_claims": {"acr": {"regex": "urn:mfa:.*"}}}, who(acr="urn:mfa:otp"), True),
    ({"path": "^/a", "required_claims": {"acr": {"regex": "urn:mfa:.*"}}}, who(acr="x-urn:mfa:otp"), False),
    ({"path": "^/a", "required_scopes": ["read", "write"]}, who(scope="openid read write"), True),
    ({"path": "^/a", "required_scopes": ["read", "write"]}, who(scope="openid read"), False),
    ({"path": "^/a", "required_scopes": ["read"]}, who(scp=["read"]), True),
    ({"path": "^/a", "required_scopes": ["read"]}, who(scp="read"), True),
    ({"path": "^/a", "required_scopes": ["read"]}, who(), False),
    ({"path": "^/a", "allowed_groups": ["admins"], "required_scopes": ["read"]},
     who(groups=("admins",), scope="write"), False),  # AND across keys
])
def test_rule_requirements(rule: dict[str, Any], identity: Identity, expected: bool) -> None:
    assert allowed(policy(rule), identity, "/a/x") is expected
    assert allowed(policy(rule), identity, "/b/x")  # the rule does not match: only the global settings apply


def test_first_matching_rule_wins() -> None:
    p = policy({"path": "^/admin/open", "allowed_groups": ["staff"]}, ADMIN)
    staff = who(groups=("staff",))
    assert allowed(p, staff, "/admin/open/x")  # the first rule applies, the later, stricter one never does
    assert not allowed(p, staff, "/admin/other")


def test_methods_select_the_rule_and_get_covers_head() -> None:
    p = policy({"path": "^/api/", "methods": ["post", "DELETE"], "allowed_groups": ["writers"]},
               {"path": "^/api/", "methods": ["GET"], "allowed_groups": ["readers"]})
    reader, writer = who(groups=("readers",)), who(groups=("writers",))
    assert allowed(p, reader, "/api/x", "GET") and not allowed(p, writer, "/api/x", "GET")
    assert allowed(p, writer, "/api/x", "POST") and not allowed(p, reader, "/api/x", "DELETE")
    assert not allowed(p, writer, "/api/x", "HEAD")  # HEAD is governed by the GET rule
    assert allowed(p, writer, "/api/x", "PUT")  # no rule for PUT: global settings only


def test_rules_add_to_the_global_settings() -> None:
    p = policy(ADMIN, allowed_email_domains=["example.com"])
    assert not allowed(p, who(email="eve@other.org", groups=("admins",)), "/admin/x")
    assert not allowed(p, who(groups=("staff",)), "/admin/x")
    assert allowed(p, who(groups=("admins",)), "/admin/x")


def test_rules_see_through_dot_segments() -> None:
    p = policy(ADMIN)
    assert not allowed(p, who(), "/public/../admin/x")
    assert not allowed(p, who(), "/x/./../admin/y")
    assert resolve_dot_segments("/a/../../b/./c") == "/b/c"


def test_public_rule_makes_a_path_public_for_its_methods_only() -> None:
    p = policy({"path": "^/status$", "methods": ["GET"], "public": True}, {"path": "^/", "allowed_groups": ["x"]})
    assert p.is_public("/status", "GET") and p.is_public("/status", "HEAD")
    assert not p.is_public("/status", "POST") and not p.is_public("/other", "GET")
    assert not p.is_public("/x/../status", "GET")


def test_an_earlier_restrictive_rule_shadows_a_later_public_one() -> None:
    p = policy(ADMIN, {"path": "^/admin/health$", "public": True})
    assert not p.is_public("/admin/health")


def test_public_paths_still_public_alongside_rules() -> None:
    assert policy(ADMIN, public_paths=["^/admin/pub/"]).is_public("/admin/pub/x")


def test_scopes_of() -> None:
    assert scopes_of({"scope": "a  b", "scp": ["c", 1]}) == {"a", "b", "c"}
    assert scopes_of({"scope": ["a"]}) == frozenset()


@pytest.mark.parametrize(("rule", "where"), [
    ({"path": "("}, "path"),
    ({"path": "^/", "methods": ["GET /"]}, "methods"),
    ({"path": "^/", "public": True, "allowed_groups": ["a"]}, "public"),
    ({"path": "^/", "required_claims": {"acr": {"regex": "["}}}, "regex"),
    ({"path": "^/", "allowed_email_domains": ["a@b.com"]}, "allowed_email_domains"),
])
def test_invalid_rules_are_config_errors(rule: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError, match=where):
        AccessSettings.model_validate({"rules": [rule]})


def test_dot_segments_are_found_wherever_they_are() -> None:
    """has_dot_segment's quick exit (no "/." and no leading ".") never misses one: checked against the
    plain segment test over every path of up to 5 characters from the characters that matter."""
    import itertools

    from gateway.auth.policy import has_dot_segment

    def plain(path: str) -> bool:
        return any(segment.partition(";")[0] in (".", "..") for segment in path.split("/"))

    paths = ["".join(chars) for n in range(6) for chars in itertools.product("/.;a", repeat=n)]
    assert 300 < sum(map(plain, paths)) < len(paths) - 300  # plenty of both
    assert [has_dot_segment(p) for p in paths] == [plain(p) for p in paths]
    assert has_dot_segment("/a/..;x/b") and has_dot_segment("../x") and not has_dot_segment("/app.js")
