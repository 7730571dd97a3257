"""`oidc-gateway doctor` against the real OP, Redis and the echo upstream, and against wrong configs."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Settings
from gateway.doctor import Finding, diagnose, exit_code, render
from gateway.doctor.provider import _offered
from tests.conftest import COOKIE_SECRET, REDIS_URL, free_port


@pytest.fixture
def good(settings_factory: Callable[..., Settings], op: Any, echo_upstream: str) -> Callable[..., Settings]:
    """A configuration that works with the test OP (client `gateway`), Redis and the echo upstream."""

    def make(**overrides: Any) -> Settings:
        base: dict[str, Any] = {"oidc": {"issuer": op.issuer, "client_id": "gateway",
                                         "client_secret": op.clients["gateway"]},
                                "upstreams": [{"path": "/", "url": echo_upstream}]}
        for key, value in overrides.items():
            base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
        return settings_factory(**base)

    return make


def by_check(findings: list[Finding]) -> dict[str, list[Finding]]:
    grouped: dict[str, list[Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.check, []).append(finding)
    return grouped


def failed(findings: list[Finding], check: str) -> Finding:
    matches = [f for f in findings if f.check == check and f.status == "fail"]
    assert matches, render(findings)
    assert matches[0].fix, "every problem says how to fix it"
    return matches[0]


async def test_a_working_configuration_passes_every_check(good: Callable[..., Settings], op: Any) -> None:
    settings = good()
    findings = await diagnose(settings)
    assert exit_code(findings) == 0, render(findings)
    checks = by_check(findings)
    for check in ("discovery", "algorithms", "client auth", "client credentials", "authorization", "clock",
                  "redis", "upstreams[0] /"):
        assert [f.status for f in checks[check]] == ["ok"], render(findings)
    assert any(f.status == "ok" and "RS256" in f.message for f in checks["jwks"])
    assert any(settings.redirect_uri in f.message for f in checks["redirect_uri"])
    assert "ms" in checks["redis"][0].message


async def test_issuer_that_is_not_exactly_the_ops_is_a_problem_with_the_exact_value(
        good: Callable[..., Settings], op: Any) -> None:
    findings = await diagnose(good(oidc={"issuer": op.issuer + "/"}))
    finding = failed(findings, "issuer")
    assert repr(op.issuer) in finding.fix
    assert exit_code(findings) == 1


async def test_wrong_secret_unregistered_redirect_uri_and_unoffered_algorithm(
        good: Callable[..., Settings], op: Any) -> None:
    port = free_port()
    findings = await diagnose(good(
        oidc={"client_secret": "not-the-secret-0123456789", "id_token_signing_algs": ["PS512"]},
        # the test OP registers only 127.0.0.1 and localhost callbacks
        listen=f"127.0.0.2:{port}", public_url=f"http://127.0.0.2:{port}"))
    assert "invalid_client" in failed(findings, "client credentials").message
    assert "client_secret" in failed(findings, "client credentials").fix
    assert "http://127.0.0.2" in failed(findings, "authorization").fix
    assert "PS512" in failed(findings, "algorithms").message
    assert "no key for PS512" in failed(findings, "jwks").message
    assert exit_code(findings) == 1


async def test_unreachable_redis_and_upstream_and_a_skewed_clock(good: Callable[..., Settings]) -> None:
    dead = free_port()
    findings = await diagnose(
        good(session={"redis_url": f"redis://127.0.0.1:{dead}/0"},
             upstreams=[{"path": "/", "url": f"http://127.0.0.1:{free_port()}"}]),
        clock=lambda: time.time() + 3600)
    assert f"127.0.0.1:{dead} unreachable" in failed(findings, "redis").message
    assert "unreachable" in failed(findings, "upstreams[0] /").message
    clock = failed(findings, "clock")
    assert "ahead of" in clock.message and "NTP" in clock.fix


async def test_memory_store_is_a_warning_not_a_failure(good: Callable[..., Settings]) -> None:
    findings = await diagnose(good(session={"store": "memory", "redis_url": None}))
    (store,) = [f for f in findings if f.check == "session store"]
    assert store.status == "warn" and "replicas" in store.message
    assert exit_code(findings) == 0


def test_capabilities_the_op_does_not_offer_are_problems(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(oidc={"token_endpoint_auth_method": "client_secret_post",
                                      "response_type": "code id_token", "response_mode": "form_post"})
    document = {"id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "private_key_jwt"],
                "response_types_supported": ["code"], "scopes_supported": ["openid", "email"],
                "code_challenge_methods_supported": ["plain"]}
    findings = _offered(settings, document)
    assert "client_secret_post" in failed(findings, "client auth").message
    assert "'code id_token'" in failed(findings, "response type").message
    assert failed(findings, "response mode")
    warnings = {f.check: f for f in findings if f.status == "warn"}
    assert "profile" in warnings["scopes"].message and "S256" in warnings["pkce"].message


def test_without_token_endpoint_auth_methods_the_spec_default_applies(
        settings_factory: Callable[..., Settings]) -> None:
    findings = _offered(settings_factory(), {"id_token_signing_alg_values_supported": ["RS256"]})
    assert all(f.status == "ok" for f in findings), render(findings)  # client_secret_basic: Discovery §3


def config_file(tmp_path: Path, op: Any, **changes: Any) -> Path:
    port = free_port()
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}", "public_url": f"http://127.0.0.1:{port}",
        "oidc": {"issuer": op.issuer, "client_id": "gateway", "client_secret": op.clients["gateway"]},
        "session": {"store": "redis", "redis_url": REDIS_URL, "key_prefix": "oidc-gateway-test:doctor:",
                    "cookie_secret": COOKIE_SECRET, "cookie_secure": False},
        "upstreams": [{"path": "/", "url": op.issuer}],  # something that answers HTTP
    }
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def doctor(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "doctor", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_cli_exits_0_for_a_working_config_and_1_with_fixes_for_a_wrong_one(tmp_path: Path, op: Any) -> None:
    result = doctor(config_file(tmp_path, op))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 problem(s)" in result.stdout and "redirect_uri=http://127.0.0.1:" in result.stdout

    wrong = config_file(tmp_path, op, oidc={"issuer": op.issuer + "/", "client_secret": "wrong-secret-000000"},
                        session={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    result = doctor(wrong)
    assert result.returncode == 1, result.stdout
    out = result.stdout
    assert "FAIL  issuer" in out and "FAIL  redis" in out and out.count("fix: ") >= 2
    assert "wrong-secret-000000" not in out + result.stderr and "Traceback" not in result.stderr


def test_cli_doctor_with_an_invalid_config_exits_2(tmp_path: Path, op: Any) -> None:
    path = config_file(tmp_path, op, listen="nowhere")
    result = doctor(path)
    assert result.returncode == 2 and "listen:" in result.stderr


async def test_unreachable_redis_cluster_is_a_finding_not_a_crash() -> None:
    import socket

    from gateway.config import settings_from_mapping
    from gateway.doctor.infra import check_store

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = settings_from_mapping({
        "public_url": "http://127.0.0.1:1", "oidc": {"issuer": "http://127.0.0.1:2", "client_id": "x",
                                                     "client_secret": "y"},
        "session": {"store": "redis", "redis_url": f"redis+cluster://127.0.0.1:{port}/", "key_prefix": "{gw}:",
                    "cookie_secret": "x" * 32, "cookie_secure": False},
        "upstreams": [{"path": "/", "url": "http://127.0.0.1:3"}]}, {})
    [finding] = await check_store(settings, timeout=3)
    assert finding.status == "fail" and "unreachable" in finding.message
