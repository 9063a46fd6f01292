"""The ``jobsup`` client commands: start, status, list, cancel, pause, resume, approve, reject,
watch, groups.

They talk to a running server through ``supervisor.client.Client``:
``--url`` (or ``JOBSUP_URL``, default ``http://127.0.0.1:8000``) and
``--token`` (or ``JOBSUP_TOKEN``). Human tables by default, ``--json`` for
scripts. Exit codes:

- 0: done (for ``watch``, ``start --watch`` and ``status``: the job completed,
  or is still pending or running);
- 1: the job failed;
- 2: bad usage, or the server refused the request (its message is printed);
- 3: the job was cancelled;
- 4: the server cannot be reached (or answered 5xx: it cannot serve now);
- 130: ``watch`` interrupted with Ctrl-C and the job left running.

Ctrl-C during ``watch`` asks whether to cancel the job. When stdin is not a
terminal, it reads one line from stdin instead: ``y`` or ``yes`` cancels,
anything else (or the end of input) leaves the job running;
``--cancel-on-interrupt`` cancels without asking.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from supervisor import wire
from supervisor.job import Job
from workers.times import iso

if TYPE_CHECKING:
    from supervisor.client import Client, Event

EXIT = {"completed": 0, "failed": 1, "cancelled": 3}
CLIENT_EPILOG = """\
environment: JOBSUP_URL (default http://127.0.0.1:8000), JOBSUP_TOKEN

exit codes (docs/client.md):
  0    done; the job completed (or, for status, is still pending or running)
  1    the job failed
  2    bad usage, or the server refused the request (its message is printed)
  3    the job was cancelled
  4    the server cannot be reached, or answered 5xx
  130  watch interrupted with Ctrl-C, the job left running"""
EXIT_USAGE = 2
EXIT_UNREACHABLE = 4
EXIT_INTERRUPTED = 130
DAY_MS = 86_400_000

_encoder = msgspec.json.Encoder()


def register(commands: Any) -> None:
    """Add the client commands to ``jobsup``'s subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the server (JOBSUP_URL; default http://127.0.0.1:8000)")
    common.add_argument("--token", help="API token (JOBSUP_TOKEN)")
    common.add_argument("--json", action="store_true", help="print JSON, for scripts")

    start = commands.add_parser("start", parents=[common], help="start a job")
    start.add_argument("type", help="job type (GET /admin/job-types lists them)")
    start.add_argument("--group", help="groupWaId, the group to work on")
    start.add_argument("--batch-size", type=int, help="members removed per batch")
    start.add_argument("--delay-ms", type=int, help="pause between batches, in ms")
    start.add_argument("--dry-run", action="store_true", help="change nothing; report")
    window = start.add_mutually_exclusive_group()
    window.add_argument("--inactivity-days", type=float, help="inactive for this many days")
    window.add_argument("--inactivity-window-ms", type=int, help="the same, in milliseconds")
    start.add_argument("--config", help="more config fields, as a JSON object")
    start.add_argument("--watch", action="store_true", help="then watch it (as jobsup watch)")
    _interrupt_option(start)

    status = commands.add_parser("status", parents=[common], help="show a job")
    status.add_argument("job_id")

    listing = commands.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--status", help="pending, running, cancelling, completed, ...")
    listing.add_argument("--type", help="job type")
    listing.add_argument("--group", help="groupWaId")
    listing.add_argument("--limit", type=int, help="at most this many (default 50)")

    cancel = commands.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job_id")

    approve = commands.add_parser("approve", parents=[common], help="approve a job awaiting it")
    approve.add_argument("job_id")
    reject = commands.add_parser("reject", parents=[common], help="reject a job awaiting approval")
    reject.add_argument("job_id")

    pause = commands.add_parser("pause", parents=[common], help="pause a running job")
    pause.add_argument("job_id")
    pause.add_argument(
        "--freeze",
        action="store_true",
        help="stop its whole process group at once (job types declared freezable)",
    )
    resume = commands.add_parser("resume", parents=[common], help="resume a paused job")
    resume.add_argument("job_id")

    logs = commands.add_parser("logs", parents=[common], help="a job's output and log lines")
    logs.add_argument("job_id")
    logs.add_argument("--follow", "-f", action="store_true", help="then new lines until it ends")
    logs.add_argument("--after", type=int, default=0, help="only the lines numbered above this")

    watch = commands.add_parser("watch", parents=[common], help="follow a job live")
    watch.add_argument("job_id")
    _interrupt_option(watch)

    groups = commands.add_parser("groups", help="groups: put, show")
    actions = groups.add_subparsers(dest="groups_command", required=True)
    put = actions.add_parser("put", parents=[common], help="create or replace a group")
    put.add_argument("file", help="the group as JSON: name, members ('-': stdin)")
    put.add_argument("--group", help="its groupWaId (else the file's groupWaId field)")
    show = actions.add_parser("show", parents=[common], help="show a group")
    show.add_argument("group")

    for parser in (
        start,
        status,
        listing,
        cancel,
        pause,
        resume,
        approve,
        reject,
        logs,
        watch,
        put,
        show,
    ):
        parser.epilog = CLIENT_EPILOG
        parser.formatter_class = raw
        # run(args) -> exit code: how jobsup's main calls a subcommand.
        parser.set_defaults(client_command=parser.prog.split(" ", 1)[1], run=run)


def _interrupt_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cancel-on-interrupt",
        action="store_true",
        help="on Ctrl-C, cancel the job without asking",
    )


def run(args: argparse.Namespace) -> int:
    """Run one client command; its exit code. Errors are printed, never raised."""
    return call(_COMMANDS[args.client_command], args)


def call(command: Any, args: argparse.Namespace) -> int:
    """Run ``command(client, args)`` with a client for ``--url``/``--token``; its exit code.

    Every command of the client (jobs, groups, schedules) ends here: the
    API's refusals and a server out of reach are printed as one line with
    their exit code, never a traceback.
    """
    # Imported here: ``jobsup serve`` need not load the HTTP client.
    from supervisor.client import Client, ClientError

    try:
        with Client(url=args.url, token=args.token) as client:
            return int(command(client, args))
    except ClientError as exc:
        where = f" ({exc.field})" if exc.field and exc.field not in exc.message else ""
        print(f"jobsup: {exc.message}{where}", file=sys.stderr)
        if exc.status is None or exc.status >= 500:
            return EXIT_UNREACHABLE
        return EXIT_USAGE
    except Usage as exc:
        print(f"jobsup: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug of ours: said in one line, not a traceback
        print(f"jobsup: unexpected error: {exc!r}", file=sys.stderr)
        return 1


class Usage(Exception):
    """Arguments a command cannot use: printed, exit 2."""


def _out(value: Any) -> None:
    print(wire.encode(value).decode())  # times as the server writes them


def _start(client: Client, args: argparse.Namespace) -> int:
    config: dict[str, Any] = {}
    if args.config:
        try:
            config = json.loads(args.config)
        except json.JSONDecodeError as exc:
            raise Usage(f"--config is not JSON: {exc}") from None
        if not isinstance(config, dict):
            raise Usage("--config must be a JSON object")
    if args.group is not None:
        config["groupWaId"] = args.group
        config.setdefault("dryRun", args.dry_run)
    elif args.dry_run:
        config["dryRun"] = True
    if args.batch_size is not None:
        config["batchSize"] = args.batch_size
    if args.delay_ms is not None:
        config["delayMs"] = args.delay_ms
    if args.inactivity_days is not None:
        config["inactivityWindowMs"] = round(args.inactivity_days * DAY_MS)
    if args.inactivity_window_ms is not None:
        config["inactivityWindowMs"] = args.inactivity_window_ms
    answer = client.start(args.type, **config)
    if args.json:
        _out(answer)
    else:
        print(f"{answer.job_id}  {answer.status}  {answer.message}")
    if args.watch:
        return _watch_id(client, args, answer.job_id)
    return 0


def _status(client: Client, args: argparse.Namespace) -> int:
    job = client.status(args.job_id)
    if args.json:
        _out(job)
    else:
        _show_job(job)
    return EXIT.get(job.status, 0)


def _show_job(job: Job) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None)
    p = job.progress
    done = f"{p.processed}" + (f"/{p.total}" if p.total is not None else "")
    note = "  ".join(x for x in (p.phase, p.message) if x)
    rows = [
        ("id", job.id),
        ("type", job.type),
        ("status", str(job.status)),
        ("progress", f"{done}  {note}".strip()),
        ("created", _time(job.created_at)),
        ("started", _time(job.started_at)),
        ("completed", _time(job.completed_at)),
        ("config", bytes(job.config).decode()),
    ]
    if job.error:
        rows.append(("error", f"{job.error.get('type', '')}: {job.error.get('message', '')}"))
    if job.cancel is not None:
        rows.append(("cancel", f"{job.cancel.reason} at {_time(job.cancel.requested_at)}"))
    r = job.resources
    if r is not None:
        how = r.ended.value + (f" ({r.limit})" if r.limit else "")
        how += f", exit {r.exit_code}" if r.exit_code is not None else f", {r.signal}"
        used = [
            f"peak {r.peak_rss_kib / 1024:.1f} MiB" if r.peak_rss_kib is not None else "",
            f"cpu {r.user_cpu_s:.2f}s user {r.system_cpu_s:.2f}s sys"
            if r.user_cpu_s is not None and r.system_cpu_s is not None
            else "",
            f"wall {r.wall_s:.2f}s" if r.wall_s is not None else "",
        ]
        rows.append(("ended", "  ".join(x for x in [how, *used] if x)))
        if r.stderr_tail:
            rows.append(("stderr", r.stderr_tail[-2000:]))
    if job.result is not None:
        rows.append(("result", _encoder.encode(job.result).decode()[:2000]))
    for name, value in rows:
        table.add_row(name, value)
    _console().print(table)


def _console() -> Any:
    from rich.console import Console

    console = Console()
    # Piped into a file or another program: no wrapping at 80 columns.
    return console if console.is_terminal else Console(width=200)


def _time(value: Any) -> str:
    """A time as the API writes it (milliseconds, ``Z``), so it can be searched for."""
    return "-" if value is None else iso(value)


def _list(client: Client, args: argparse.Namespace) -> int:
    labels = {"groupWaId": args.group} if args.group else {}
    jobs = client.list(status=args.status, type=args.type, limit=args.limit, **labels)
    if args.json:
        _out(jobs)
        return 0
    from rich.table import Table

    table = Table("id", "type", "status", "progress", "created")
    table.columns[0].no_wrap = True
    for job in jobs:
        p = job.progress
        done = f"{p.processed}" + (f"/{p.total}" if p.total is not None else "")
        table.add_row(job.id, job.type, str(job.status), done, _time(job.created_at))
    _console().print(table)
    return 0


def _logs(client: Client, args: argparse.Namespace) -> int:
    """One line per log line: ``number time stream[/level] text`` (``--json``: objects)."""
    if args.follow:
        lines: Any = client.follow_logs(args.job_id)
    else:
        lines = _pages(client, args.job_id, args.after)
    try:
        for line in lines:
            if line.line <= args.after:
                continue
            if args.json:
                _out(line)
                continue
            at = datetime.fromtimestamp(line.at / 1000, UTC)
            stream = line.stream if line.level is None else f"{line.stream}/{line.level}"
            print(f"{line.line:>6} {iso(at)} {stream:<12} {line.text}", flush=True)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


def _pages(client: Client, job_id: str, after: int) -> Any:
    """Every line stored now, page by page."""
    while True:
        page = client.logs(job_id, after)
        if not page.lines:
            return
        yield from page.lines
        after = page.next_after


def _cancel(client: Client, args: argparse.Namespace) -> int:
    return _acted(client.cancel(args.job_id), args)


def _approve(client: Client, args: argparse.Namespace) -> int:
    return _answered(client.approve(args.job_id), args)


def _reject(client: Client, args: argparse.Namespace) -> int:
    return _answered(client.reject(args.job_id), args)


def _answered(job: Job, args: argparse.Namespace) -> int:
    return _acted(job, args, job.id)


def _acted(answer: Any, args: argparse.Namespace, job_id: str | None = None) -> int:
    """An action's answer: the job and its status now, or the answer as JSON."""
    if args.json:
        _out(answer)
    else:
        print(f"{job_id or answer.job_id}  {answer.status}")
    return 0


def _pause(client: Client, args: argparse.Namespace) -> int:
    return _acted(client.pause(args.job_id, freeze=args.freeze), args)


def _resume(client: Client, args: argparse.Namespace) -> int:
    return _acted(client.resume(args.job_id), args)


def _groups_put(client: Client, args: argparse.Namespace) -> int:
    try:
        raw = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
        body = json.loads(raw)
    except (OSError, json.JSONDecodeError) as exc:
        raise Usage(f"{args.file}: {exc}") from None
    if not isinstance(body, dict):
        raise Usage(f"{args.file}: the group must be a JSON object")
    group_wa_id = args.group or body.pop("groupWaId", None)
    body.pop("groupWaId", None)
    if not isinstance(group_wa_id, str):
        raise Usage("name the group: --group G, or groupWaId in the file")
    group = client.put_group(group_wa_id, body)
    _print_group(args, group)
    return 0


def _groups_show(client: Client, args: argparse.Namespace) -> int:
    _print_group(args, client.group(args.group))
    return 0


def _print_group(args: argparse.Namespace, group: dict[str, Any]) -> None:
    if args.json:
        _out(group)
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for name, value in group.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        table.add_row(name, shown)
    _console().print(table)


def _watch(client: Client, args: argparse.Namespace) -> int:
    return _watch_id(client, args, args.job_id)


def _watch_id(client: Client, args: argparse.Namespace, job_id: str) -> int:
    """Follow the job's events to its end; Ctrl-C asks whether to cancel it."""
    watcher = _Watcher(client, args, job_id)
    while True:
        try:
            return watcher.follow()
        except KeyboardInterrupt:
            watcher.stop_display()
            if not _ask_cancel(args, job_id):
                print(f"jobsup: job {job_id} keeps running (jobsup watch {job_id})")
                return EXIT_INTERRUPTED
            answer = client.cancel(job_id)
            print(f"jobsup: {job_id} {answer.status}", file=sys.stderr)
            if answer.status in EXIT:
                return EXIT[answer.status]
            # Cancelling: follow it to its end.


def _ask_cancel(args: argparse.Namespace, job_id: str) -> bool:
    if args.cancel_on_interrupt:
        return True
    # A second Ctrl-C while asking: leave without cancelling.
    previous = signal.signal(signal.SIGINT, _leave)
    try:
        if sys.stdin.isatty():
            from rich.prompt import Confirm

            return bool(Confirm.ask(f"\nCancel job {job_id}?", default=False))
        print(f"cancel job {job_id}? [y/N] (reading stdin)", file=sys.stderr, flush=True)
        return sys.stdin.readline().strip().lower() in ("y", "yes")
    finally:
        signal.signal(signal.SIGINT, previous)


def _leave(signum: int, frame: Any) -> NoReturn:
    print("", file=sys.stderr)
    raise SystemExit(EXIT_INTERRUPTED)


class _Watcher:
    def __init__(self, client: Client, args: argparse.Namespace, job_id: str) -> None:
        self.client = client
        self.args = args
        self.job_id = job_id
        self.last_id: str | None = None
        self.progress: Any = None
        self.task: Any = None

    def follow(self) -> int:
        for event in self.client.events(self.job_id, last_event_id=self.last_id):
            if event.id is not None:
                self.last_id = event.id
            if self.args.json:
                data = wire.encode(event.data).decode()
                print(f'{{"event": "{event.kind}", "id": {json.dumps(event.id)}, "data": {data}}}')
                sys.stdout.flush()
            else:
                self._draw(event)
            if event.kind == "finished":
                self.stop_display()
                job: Job = event.data
                if not self.args.json:
                    extra = ""
                    if job.error:
                        extra = f": {job.error.get('message', '')}"
                    print(f"{job.id}  {job.status}{extra}")
                return EXIT.get(job.status, 0)
        return EXIT.get(self.client.status(self.job_id).status, 0)

    def _draw(self, event: Event) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self.progress is None:
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[note]}"),
            )
            self.progress.console.print(f"job {self.job_id}")
            self.progress.start()
            self.task = self.progress.add_task("", total=None, rate="", note="")
        data = event.data
        if isinstance(data, Job):
            p = data.progress
            self._update(str(data.status), p.processed, p.total, p.message or p.phase or "")
        elif event.kind == "progress":
            self._update(str(data.status), data.processed, data.total, data.message or data.phase)

    def _update(self, status: str, processed: int, total: int | None, note: str | None) -> None:
        assert self.progress is not None
        self.progress.update(self.task, completed=processed, total=total)
        speed = self.progress.tasks[0].speed
        rate = f"{speed:.1f}/s" if speed else ""
        self.progress.update(self.task, description=status, rate=rate, note=note or "")

    def stop_display(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


_COMMANDS = {
    "start": _start,
    "approve": _approve,
    "reject": _reject,
    "status": _status,
    "logs": _logs,
    "list": _list,
    "cancel": _cancel,
    "pause": _pause,
    "resume": _resume,
    "watch": _watch,
    "groups put": _groups_put,
    "groups show": _groups_show,
}
