"""The ``jobsup`` command: serve, demo, migrate."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from supervisor.settings import Settings, SettingsError


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    changes = {}
    if getattr(args, "host", None):
        changes["host"] = args.host
    if getattr(args, "port", None):
        changes["port"] = args.port
    return dataclasses.replace(settings, **changes)


def serve(settings: Settings) -> None:
    from supervisor.app import create_app
    from supervisor.server import make_server

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    make_server(create_app(settings), settings).run()


def migrate(settings: Settings) -> None:
    from supervisor.store import Store
    from workers import registry

    registry.load(settings.job_modules)  # their tables too
    applied = Store(settings.database_url).migrate()
    print("applied: " + ", ".join(applied) if applied else "database is up to date")


def token_reset(settings: Settings) -> None:
    """Replace the generated admin token (used while JOBSUP_TOKENS is unset); print the new one."""
    from supervisor.keys import reset_admin_token
    from supervisor.store import Store
    from workers.db import connect

    if settings.tokens:
        print(
            "jobsup token reset: JOBSUP_TOKENS is set, so no generated token is in use; "
            "change JOBSUP_TOKENS instead",
            file=sys.stderr,
        )
        raise SystemExit(2)
    Store(settings.database_url).migrate()
    db = connect(settings.database_url)
    try:
        token = reset_admin_token(db)
    finally:
        db.close()
    print(
        "new admin token (running servers accept it, and stop accepting the old one, "
        "once restarted):"
    )
    print(token)


def bench(args: list[str]) -> None:
    """Run the benchmark suite of a source checkout (``python -m bench``)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "__main__.py").exists():
        print("jobsup bench: the suite comes with a source checkout (bench/)", file=sys.stderr)
        raise SystemExit(2)
    os.chdir(root)
    os.execv(sys.executable, [sys.executable, "-m", "bench", *args])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="jobsup", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("serve", "run the HTTP server"),
        ("demo", "serve with a sample group and run a dry-run removal"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--host", help="interface to listen on (JOBSUP_HOST)")
        sub.add_argument("--port", type=int, help="port (PORT)")
    commands.add_parser("migrate", help="apply database migrations and exit")
    token = commands.add_parser("token", help="manage the generated admin token")
    token.add_argument("action", choices=["reset"], help="reset: make a new one and print it")
    # add_help=False: --help goes through to the suite's own options.
    commands.add_parser("bench", add_help=False, help="run the benchmark suite (python -m bench)")
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        bench(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        settings = _settings(args)
        if args.command != "bench":
            from workers import registry

            registry.load(settings.job_modules)
            settings.policy()  # a job module's bad setting stops us here, named
    except SettingsError as exc:
        print(f"jobsup: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if args.command == "serve":
        serve(settings)
    elif args.command == "demo":
        from supervisor.demo import run_demo

        raise SystemExit(run_demo(settings))
    elif args.command == "token":
        token_reset(settings)
    else:
        migrate(settings)
