"""The ``jobsup`` command.

Each subcommand comes from a ``register(subparsers)`` function in
``COMMANDS``; it adds its parser and sets ``run=fn(args) -> exit code``.
A module that brings its own subcommands adds its ``register`` to the list.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from supervisor import cli_client, cli_schedules, token_command
from supervisor.settings import Settings, env_names
from supervisor.startup import (
    EXIT_CODES,
    EXIT_USAGE,
    StartupFailed,
    check_port,
    load_job_modules,
    load_settings,
    lock_sqlite,
    migrate_database,
)

Subparsers = Any  # argparse's _SubParsersAction, private by name
Register = Callable[[Subparsers], None]

DESCRIPTION = """\
jobsup: a job supervisor for long-running Python functions. An HTTP server
keeps the job table; each job runs in its own child process and can be
watched and cancelled at any moment."""

SETTINGS_NOTE = "Settings come from environment variables; see docs/configuration.md."


def _wrap(text: str) -> str:
    return "\n".join(textwrap.fill(p, 79) for p in text.split("\n\n"))


def _env_list(names: list[str]) -> str:
    return _wrap("environment: " + ", ".join(names))


def _server_env() -> str:
    """What a server reads: the settings, and the built-in job modules' own."""
    from workers import registry

    registry.load(())
    names = [*env_names(), *registry.setting_names()]
    return _env_list([*names, "and the JOBSUP_JOB_MODULES modules' own settings"])


# The client commands' codes differ (3 is a cancelled job there): say so where
# the server's table is the only one shown.
CLIENT_CODES_NOTE = (
    "\n\nThe client commands (start, status, list, cancel, watch, groups, schedules)"
    "\nhave their own exit codes: jobsup start --help, docs/client.md."
)


def _exit_codes() -> str:
    rows = "\n".join(f"  {code}  {meaning}" for code, meaning in EXIT_CODES)
    return f"exit codes (docs/operations.md, Exit codes):\n{rows}"


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is outside 1-65535")
    return port


# Held for the life of the process: a second server on the same SQLite file refuses.
_sqlite_lock: IO[bytes] | None = None


def prepare_to_serve(args: argparse.Namespace) -> Settings:
    """Everything that can fail before the server starts, each with its one line and code."""
    global _sqlite_lock
    settings = load_settings(args)
    load_job_modules(settings)
    check_port(settings.host, settings.port)
    _sqlite_lock = lock_sqlite(settings)
    migrate_database(settings)
    return settings


def serve(args: argparse.Namespace) -> int:
    settings = prepare_to_serve(args)
    from supervisor.app import create_app

    return _run(create_app, settings)


def _run(create: Callable[[Settings], Any], settings: Settings) -> int:
    """Serve the app ``create`` makes, logging set up first, until a stop."""
    from supervisor import logs
    from supervisor.server import make_server

    logs.setup(settings.log_level, settings.log_format)
    make_server(create(settings), settings, log_config=None).run()
    return 0


def prepare_worker(args: argparse.Namespace) -> Settings:
    """The worker's checks: PostgreSQL, its modules, its health port, migrations."""
    from supervisor.worker import check_database

    settings = load_settings(args)
    if getattr(args, "port", None) is None and settings.health_port:
        settings = dataclasses.replace(settings, port=settings.health_port)
    check_database(settings)
    load_job_modules(settings)
    check_port(settings.host, settings.port)
    migrate_database(settings)
    return settings


def worker(args: argparse.Namespace) -> int:
    settings = prepare_worker(args)
    from supervisor.worker import create_worker_app

    return _run(create_worker_app, settings)


def demo(args: argparse.Namespace) -> int:
    settings = prepare_to_serve(args)
    from supervisor.demo import run_demo

    return run_demo(settings)


def migrate(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    load_job_modules(settings)  # their tables too
    applied = migrate_database(settings)
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def openapi(args: argparse.Namespace) -> int:
    """Print the OpenAPI document of the app these settings make (docs/openapi.json)."""
    settings = load_settings(args)
    load_job_modules(settings)
    from supervisor.api.openapi import text
    from supervisor.app import create_app

    sys.stdout.write(text(create_app(settings).routes))
    return 0


def bench(args: argparse.Namespace) -> int:
    """Run the benchmark suite of a source checkout (``python -m bench``)."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "bench" / "__main__.py").exists():
        raise StartupFailed(EXIT_USAGE, "bench: the suite comes with a source checkout (bench/)")
    os.chdir(root)
    os.execv(sys.executable, [sys.executable, "-m", "bench", *args.passthrough])
    return 0  # not reached


def _add(subparsers: Subparsers, name: str, summary: str, text: str, **kwargs: Any) -> Any:
    return subparsers.add_parser(
        name,
        help=summary,
        description=_wrap(text),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="interface to listen on (over JOBSUP_HOST)")
    parser.add_argument("--port", type=_port, help="port, 1-65535 (over PORT)")


def register_serve(subparsers: Subparsers) -> None:
    parser = _add(
        subparsers,
        "serve",
        "run the HTTP server",
        "Run the HTTP server in the foreground: apply migrations, start the "
        "forkserver, rescue the jobs of dead instances, then answer HTTP until "
        "SIGTERM or SIGINT, which cancels running jobs and exits 0.",
        epilog=_server_env() + "\n\n" + _exit_codes(),
    )
    _server_options(parser)
    parser.set_defaults(run=serve)


def register_worker(subparsers: Subparsers) -> None:
    parser = _add(
        subparsers,
        "worker",
        "claim and run jobs, serving only /healthz and /readyz",
        "Run a worker in the foreground: an instance that claims pending jobs from "
        "the shared PostgreSQL queue and runs them (heartbeats, rescue, cancel "
        "requests through NOTIFY, as jobsup serve does) without the API. It answers "
        "/healthz and /readyz on JOBSUP_HEALTH_PORT (or PORT). Web instances "
        "(jobsup serve, often with JOBSUP_MAX_CONCURRENT_JOBS=0) accept the jobs. "
        "SIGTERM or SIGINT stops it gracefully: resumable jobs go back to the "
        "queue, others are cancelled, and it exits 0.",
        epilog=_server_env() + "\n\n" + _exit_codes(),
    )
    parser.add_argument("--host", help="interface for the health port (over JOBSUP_HOST)")
    parser.add_argument(
        "--port", type=_port, help="health port, 1-65535 (over JOBSUP_HEALTH_PORT and PORT)"
    )
    parser.set_defaults(run=worker)


def register_demo(subparsers: Subparsers) -> None:
    parser = _add(
        subparsers,
        "demo",
        "serve, load a sample group and show a dry-run removal",
        "Start the server, load a sample group of 60 members, run a dry-run "
        "removal_workflow, print its progress and who would be removed, then "
        "stop. Nothing is removed. Run it as often as you like.",
        epilog=_server_env() + "\n\n" + _exit_codes(),
    )
    _server_options(parser)
    parser.set_defaults(run=demo)


def register_migrate(subparsers: Subparsers) -> None:
    parser = _add(
        subparsers,
        "migrate",
        "apply database migrations and exit",
        "Apply the database migrations of jobsup and of the job modules, then "
        "exit. The server also applies them when it starts; this is for a "
        "release step.",
        epilog=_env_list(["DATABASE_URL", "JOBSUP_JOB_MODULES (and those modules' settings)"])
        + "\n\n"
        + _exit_codes(),
    )
    parser.set_defaults(run=migrate)


def register_openapi(subparsers: Subparsers) -> None:
    parser = _add(
        subparsers,
        "openapi",
        "print the API's OpenAPI 3.1 document",
        "Print the OpenAPI 3.1 document that GET /openapi.json serves, for the "
        "built-in job types and the JOBSUP_JOB_MODULES ones (docs/openapi.json "
        "is this command's output with none).",
        epilog=_env_list(["JOBSUP_JOB_MODULES"]),
    )
    parser.set_defaults(run=openapi)


def register_bench(subparsers: Subparsers) -> None:
    # add_help=False: --help and every flag go through to the suite.
    parser = subparsers.add_parser(
        "bench",
        add_help=False,
        help="run the benchmark suite of a source checkout (jobsup bench --help: its options)",
    )
    parser.set_defaults(run=bench, passthrough=[])


COMMANDS: list[Register] = [
    register_serve,
    register_worker,
    register_demo,
    register_migrate,
    token_command.register,
    register_openapi,
    register_bench,
    cli_client.register,  # start, status, list, cancel, watch, groups: a client of a server
    cli_schedules.register,  # schedules put, list, show, delete
]


def _main_is_the_package() -> None:
    """Tell multiprocessing that the ``jobsup`` command is ``python -m supervisor``.

    The command is the installer's script, whose only code calls this
    function. Seen as a script, multiprocessing has the forkserver import
    it (and so this whole CLI, httpx included) into the template every job
    child forks from; seen as the module ``supervisor.__main__``, which it
    is, it imports nothing (children skip a package's ``__main__``).
    """
    script = sys.modules.get("__main__")
    if script is None or script.__spec__ is not None or getattr(script, "main", None) is not main:
        return  # run as a module, or not through a script that calls this
    # Only the installer's wrapper (``re``, ``sys`` and ``main``): a launcher
    # of one's own that imports more (job types, a logging set-up) stays a
    # script, which multiprocessing runs again in each job child.
    if {name for name in vars(script) if not name.startswith("__")} <= {"re", "sys", "main"}:
        script.__spec__ = importlib.util.find_spec("supervisor.__main__")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobsup",
        description=DESCRIPTION,
        epilog=SETTINGS_NOTE + "\n\n" + _exit_codes() + CLIENT_CODES_NOTE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    from workers import registry

    registry.load(())  # the built-in job modules' own commands (jobsup import)
    for register in registry.commands():
        register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> None:
    _main_is_the_package()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        args.passthrough = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code = args.run(args)
    except StartupFailed as exc:
        print(f"jobsup: {exc.message}", file=sys.stderr)
        code = exc.code
    raise SystemExit(code)
