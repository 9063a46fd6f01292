"""``jobsup schedules``: put, list, show and delete recurring schedules on a running server.

The same server options, output and exit codes as the other client
commands (``supervisor.cli_client``): ``--url``/``JOBSUP_URL``,
``--token``/``JOBSUP_TOKEN``, ``--json``; 0 done, 2 refused or bad usage,
4 the server cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from supervisor.cli_client import CLIENT_EPILOG, Usage, call

if TYPE_CHECKING:
    from supervisor.client import Client

_encoder = msgspec.json.Encoder()


def register(commands: Any) -> None:
    """Add ``jobsup schedules put|list|show|delete`` to ``jobsup``'s subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the server (JOBSUP_URL; default http://127.0.0.1:8000)")
    common.add_argument("--token", help="API token (JOBSUP_TOKEN)")
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")

    schedules = commands.add_parser("schedules", help="recurring jobs: put, list, show, delete")
    actions = schedules.add_subparsers(dest="schedules_command", required=True)
    put = actions.add_parser("put", parents=[common], help="create or replace a schedule")
    put.add_argument("name")
    put.add_argument("--cron", required=True, help="five cron fields, e.g. '0 3 * * 1'")
    put.add_argument("--timezone", default="UTC", help="IANA zone (default UTC)")
    put.add_argument(
        "--job", required=True, help="the start request as JSON, or @FILE, or - for stdin"
    )
    put.add_argument("--disabled", action="store_true", help="store it without firing")
    put.add_argument(
        "--catch-up",
        choices=("one", "none"),
        default="one",
        help="a tick missed while no instance ran: fire once (default) or skip",
    )
    listing = actions.add_parser("list", parents=[common], help="list schedules")
    listing.add_argument("--limit", type=int, help="at most this many (default 100)")
    show = actions.add_parser("show", parents=[common], help="a schedule, next and last ticks")
    show.add_argument("name")
    delete = actions.add_parser("delete", parents=[common], help="delete a schedule")
    delete.add_argument("name")
    for parser in (put, listing, show, delete):
        parser.epilog = CLIENT_EPILOG
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return call(_COMMANDS[args.schedules_command], args)


def _out(value: Any) -> None:
    print(_encoder.encode(value).decode())


def _job(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise Usage(f"--job: cannot read {text[1:]}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise Usage(f"--job is not JSON: {exc}") from None


def _put(client: Client, args: argparse.Namespace) -> int:
    body = {
        "cron": args.cron,
        "timezone": args.timezone,
        "job": _job(args.job),
        "enabled": not args.disabled,
        "catchUp": args.catch_up,
    }
    _print(args, client.put_schedule(args.name, body))
    return 0


def _list(client: Client, args: argparse.Namespace) -> int:
    schedules = client.schedules(args.limit)
    if args.json:
        _out(schedules)
        return 0
    for s in schedules:
        state = s["nextFireAt"] or "disabled"
        print(f"{s['name']}  {s['cron']}  {s['timezone']}  {s['job'].get('type')}  next {state}")
    return 0


def _show(client: Client, args: argparse.Namespace) -> int:
    _print(args, client.schedule(args.name))
    return 0


def _delete(client: Client, args: argparse.Namespace) -> int:
    client.delete_schedule(args.name)
    if not args.json:
        print(f"deleted {args.name}")
    return 0


def _print(args: argparse.Namespace, s: dict[str, Any]) -> None:
    if args.json:
        _out(s)
        return
    print(f"{s['name']}: {s['cron']} in {s['timezone']}, catch-up {s['catchUp']}")
    print(f"  job   {json.dumps(s['job'])}")
    print(f"  next  {', '.join(s.get('upcoming') or []) or 'disabled'}")
    for tick in s.get("recent") or []:
        if "jobId" in tick:
            what = f"job {tick['jobId']} {tick.get('jobStatus', '')}"
        else:
            what = f"skipped: {tick['skipped']}"
        print(f"  tick  {tick['tickAt']}  {what}".rstrip())


_COMMANDS = {"put": _put, "list": _list, "show": _show, "delete": _delete}
