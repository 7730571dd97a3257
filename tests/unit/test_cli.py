"""The command line: `python -m gateway [run|check-config] --config PATH`, exit codes and output.

check-config runs as a real subprocess (the way operators and the Helm chart call it). `run` is
exercised in-process with a stand-in `gateway.app` module, so no server is started.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import gateway
from gateway.cli import main
from gateway.config import Settings

REPO = Path(__file__).resolve().parents[2]
CLIENT_SECRET = "client-secret-never-printed-4711"
COOKIE_SECRET = "cookie-secret-never-printed-0123456789abcdef"

VALID = f"""\
listen: "127.0.0.1:4180"
public_url: "http://127.0.0.1:4180"
oidc:
  issuer: "http://127.0.0.1:9000"
  client_id: "gateway"
  client_secret: "{CLIENT_SECRET}"
  scopes: [openid, profile, email, offline_access]
  token_endpoint_auth_method: client_secret_basic
session:
  store: redis
  redis_url: "redis://127.0.0.1:6379/0"
  cookie_secret: "{COOKIE_SECRET}"
  cookie_secure: false
upstreams:
  - path: /
    url: "http://127.0.0.1:8080"
"""


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def gateway_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "OIDC_GATEWAY_CONFIG"}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True,
                          env=environ, cwd=REPO, timeout=60, check=False)


def assert_no_secrets(result: subprocess.CompletedProcess[str]) -> None:
    for secret in (CLIENT_SECRET, COOKIE_SECRET):
        assert secret not in result.stdout and secret not in result.stderr


# --- check-config (subprocess) -----------------------------------------------------------------


def test_valid_config_prints_one_summary_line(tmp_path: Path) -> None:
    result = gateway_cli("check-config", "--config", str(write(tmp_path, VALID)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("config OK: issuer=http://127.0.0.1:9000")
    for part in ("1 upstream(s)", "session store=redis", "listen=127.0.0.1:4180"):
        assert part in lines[0]
    assert result.stderr == ""
    assert_no_secrets(result)


def test_config_option_may_come_before_the_command(tmp_path: Path) -> None:
    result = gateway_cli("--config", str(write(tmp_path, VALID)), "check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK:")


def test_invalid_config_lists_every_problem_with_its_key_path(tmp_path: Path) -> None:
    text = (VALID.replace(COOKIE_SECRET, "too-short-" + CLIENT_SECRET[:8])
            .replace('listen: "127.0.0.1:4180"', 'listen: "nope"')
            .replace("path: /", "path: api")
            .replace("  store: redis\n", "  store: redis\n  colour: blue\n"))
    result = gateway_cli("check-config", "--config", str(write(tmp_path, text)))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert "listen: must be host:port with a port from 1 to 65535, e.g. 0.0.0.0:4180" in lines
    assert "upstreams[0].path: must start with '/', e.g. / or /api/" in lines
    assert "session.colour: unknown key" in lines
    assert any(line.startswith("session.cookie_secret: must be at least 32 bytes") for line in lines)
    assert len(lines) == 4  # one line per problem, nothing else
    assert "Traceback" not in result.stderr
    assert_no_secrets(result)


def test_unset_environment_variable_is_reported(tmp_path: Path) -> None:
    text = VALID.replace(f'"{CLIENT_SECRET}"', '"${GW_TEST_UNSET_SECRET}"')
    result = gateway_cli("check-config", "--config", str(write(tmp_path, text)))
    assert result.returncode == 2
    assert result.stderr == "oidc.client_secret: environment variable GW_TEST_UNSET_SECRET is not set\n"


def test_interpolation_uses_the_process_environment(tmp_path: Path) -> None:
    text = VALID.replace('client_id: "gateway"', 'client_id: "${GW_TEST_CLIENT_ID}"')
    result = gateway_cli("check-config", "--config", str(write(tmp_path, text)),
                         env={"GW_TEST_CLIENT_ID": "from-env"})
    assert result.returncode == 0, result.stderr


def test_config_path_from_environment(tmp_path: Path) -> None:
    result = gateway_cli("check-config", env={"OIDC_GATEWAY_CONFIG": str(write(tmp_path, VALID))})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("config OK:")


def test_config_option_wins_over_environment(tmp_path: Path) -> None:
    result = gateway_cli("check-config", "--config", str(write(tmp_path, VALID)),
                         env={"OIDC_GATEWAY_CONFIG": str(tmp_path / "absent.yaml")})
    assert result.returncode == 0, result.stderr


def test_no_config_at_all_is_a_usage_error() -> None:
    result = gateway_cli("check-config")
    assert result.returncode == 2
    assert "usage: oidc-gateway" in result.stderr
    assert "--config PATH is required (or set OIDC_GATEWAY_CONFIG)" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    result = gateway_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr == f"{path}: cannot read the file: No such file or directory\n"


def test_yaml_syntax_error_is_a_clean_error(tmp_path: Path) -> None:
    path = write(tmp_path, "listen: [unclosed\n")
    result = gateway_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.startswith(f"{path}: invalid YAML at line 2, column 1")
    assert "Traceback" not in result.stderr


def test_run_with_an_invalid_config_exits_2_before_starting(tmp_path: Path) -> None:
    result = gateway_cli("--config", str(write(tmp_path, VALID.replace("path: /", "path: api"))))
    assert result.returncode == 2
    assert result.stderr == "upstreams[0].path: must start with '/', e.g. / or /api/\n"


def test_version() -> None:
    result = gateway_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"oidc-gateway {gateway.__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    result = gateway_cli("serve", "--config", "x")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


# --- run (in-process, stand-in server) ---------------------------------------------------------


class FakeServer:
    """Stands in for gateway.app.run_gateway: records the settings, then returns or raises."""

    def __init__(self) -> None:
        self.calls: list[Settings] = []
        self.config_paths: list[Path | None] = []
        self.raises: BaseException | None = None

    def __call__(self, settings: Settings, *, config_path: Path | None = None) -> None:
        self.calls.append(settings)
        self.config_paths.append(config_path)
        if self.raises is not None:
            raise self.raises


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    fake = FakeServer()
    module = types.ModuleType("gateway.app")
    module.run_gateway = fake  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gateway.app", module)
    monkeypatch.delenv("OIDC_GATEWAY_CONFIG", raising=False)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield fake
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.parametrize("argv", [["--config", "{path}"], ["run", "--config", "{path}"], ["run"]])
def test_run_loads_settings_and_starts_the_server(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    path = write(tmp_path, VALID.replace('public_url: "', 'log_level: debug\npublic_url: "'))
    monkeypatch.setenv("OIDC_GATEWAY_CONFIG", str(path))
    assert main([arg.format(path=path) for arg in argv]) == 0
    (settings,) = server.calls
    assert settings.oidc.client_id == "gateway"
    assert server.config_paths == [path]  # what SIGHUP re-reads
    assert logging.getLogger().level == logging.DEBUG  # from settings.log_level


def test_run_exits_0_on_keyboard_interrupt(server: FakeServer, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    server.raises = KeyboardInterrupt()
    assert main(["--config", str(write(tmp_path, VALID))]) == 0
    assert server.calls
    assert "Traceback" not in capsys.readouterr().err


def test_run_with_invalid_config_never_starts_the_server(server: FakeServer, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, VALID.replace("cookie_secure: false", "cookie_secure: 1x"))
    assert main(["--config", str(path)]) == 2
    assert server.calls == []
    assert capsys.readouterr().err == "session.cookie_secure: must be true or false\n"


def test_check_config_does_not_start_the_server(server: FakeServer, tmp_path: Path) -> None:
    assert main(["check-config", "--config", str(write(tmp_path, VALID))]) == 0
    assert server.calls == []


def test_main_returns_usage_code_instead_of_exiting(server: FakeServer) -> None:
    assert main([]) == 2
    assert main(["--help"]) == 0
