"""AccessPolicy: public paths, email domains, groups; each rule fails its test when removed."""

import pytest

from gateway.auth.identity import Identity
from gateway.auth.policy import AccessPolicy
from gateway.config import AccessSettings
from gateway.errors import Forbidden


def policy(**kwargs: object) -> AccessPolicy:
    return AccessPolicy(AccessSettings.model_validate(kwargs))


def who(email: str | None = "alice@example.com", groups: tuple[str, ...] = (), **claims: object) -> Identity:
    return Identity(sub="alice", email=email, groups=groups, claims={"email": email, **claims})


def test_public_paths_are_searched_regexes() -> None:
    p = policy(public_paths=["^/public/", r"\.css$"])
    assert p.is_public("/public/x") and p.is_public("/a/site.css")
    assert not p.is_public("/publicx") and not p.is_public("/x/public/")


@pytest.mark.parametrize("path", ["/public/../admin", "/public/./../admin", "/public/..;x/admin", "/public/.."])
def test_dot_segments_are_never_public(path: str) -> None:
    assert not policy(public_paths=["^/public/"]).is_public(path)


def test_empty_lists_allow_anyone() -> None:
    policy().check(who(email=None))


def test_email_domain_rule() -> None:
    p = policy(allowed_email_domains=["Example.com", "@corp.example"])
    p.check(who("alice@EXAMPLE.com"))
    p.check(who("bob@corp.example"))
    for email in ("eve@evil.com", "eve@example.com.evil.com", None, "example.com"):
        with pytest.raises(Forbidden):
            p.check(who(email))
    with pytest.raises(Forbidden):
        p.check(who("alice@example.com", email_verified=False))


def test_group_rule() -> None:
    p = policy(allowed_groups=["admins"])
    p.check(who(groups=("staff", "admins")))
    with pytest.raises(Forbidden):
        p.check(who(groups=("staff",)))
    with pytest.raises(Forbidden):
        p.check(who(groups=()))
