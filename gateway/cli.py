"""Command line: `oidc-gateway [run] --config PATH`, `check-config --config PATH`, `doctor --config PATH`.

Exit codes: 0 on a clean stop or a valid configuration, 2 on a usage error or an invalid
configuration (every problem printed to stderr as `key.path: reason`, one per line), 1 when it cannot
serve (the port is taken) or, with `workers` > 1, a worker process failed. `doctor` exits 1 when a
check against the OP, Redis or an upstream failed (gateway.doctor). `--config`
may be omitted when OIDC_GATEWAY_CONFIG names the file. No logic lives here: settings come from
gateway.config, the server (and its worker processes) from gateway.app, logging from gateway.web.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__
from gateway.config import Settings, load_settings
from gateway.errors import ConfigError, WorkerError

__all__ = ["main"]

CONFIG_ENV = "OIDC_GATEWAY_CONFIG"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # argparse's own code for usage errors; also used for an invalid configuration


def _parser() -> argparse.ArgumentParser:
    # --config is accepted before and after the subcommand; SUPPRESS keeps the sub-parser's
    # default from overwriting a value given before it.
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("--config", "-c", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"YAML configuration file (default: ${CONFIG_ENV})")
    parser = argparse.ArgumentParser(prog="oidc-gateway", parents=[config],
                                     description="OpenID Connect reverse-proxy gateway.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{run,check-config,doctor}")
    commands.add_parser("run", parents=[config], help="run the gateway (the default)")
    commands.add_parser("check-config", parents=[config],
                        help="validate the configuration: exit 0 with a summary, or 2 listing every problem")
    commands.add_parser("doctor", parents=[config],
                        help="check the OP, Redis and the upstreams with this configuration; exit 1 on a problem")
    return parser


def _summary(settings: Settings) -> str:
    """One line, no secrets: what check-config prints for a valid file."""
    return (f"config OK: issuer={settings.oidc.issuer}, client_id={settings.oidc.client_id}, "
            f"{len(settings.upstreams)} upstream(s), session store={settings.session.store}, "
            f"listen={settings.listen}, public_url={settings.public_url}")


def _print_problems(exc: ConfigError) -> None:
    for key, reason in exc.problems:
        print(f"{key}: {reason}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and of `python -m gateway`; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
        path = getattr(args, "config", None) or os.environ.get(CONFIG_ENV)
        if not path:
            parser.error(f"--config PATH is required (or set {CONFIG_ENV})")
    except SystemExit as exc:  # --help, --version and usage errors
        return EXIT_OK if exc.code is None else exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        _print_problems(exc)
        return EXIT_USAGE
    if args.command == "check-config":
        print(_summary(settings))
        return EXIT_OK
    from gateway.web.observability import configure_logging  # lazily, like the server

    if args.command == "doctor":
        from gateway.doctor import run_doctor

        configure_logging("critical", settings.log_format)  # the report says it all: no duplicate log lines
        return run_doctor(settings)
    from gateway.app import run_gateway  # lazily: check-config must not import the server

    configure_logging(settings.log_level, settings.log_format)

    try:
        run_gateway(settings, config_path=Path(path))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken: say so plainly, no traceback
        print(f"oidc-gateway: cannot serve on {settings.listen}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    except WorkerError as exc:  # workers > 1: one crashed or would not stop
        print(f"oidc-gateway: {exc.detail}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK
