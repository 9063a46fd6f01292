"""The API under load, and progress messages through the pipe into the table.

api: GET status with 50 connections, idle and while 4 jobs each send 1,000
progress messages a second, against a bare Starlette route on the same
uvicorn stack. progress: one child sending progress as fast as it can,
against a raw ``Connection.send_bytes`` loop; then the same API load while
such a child floods, to see whether the API holds meanwhile.

Each comparison runs in rounds (idle, bare, busy, idle, ...) and keeps the
median of each figure, so one disturbed round on a shared machine does not
decide the result.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from bench import load
from bench.servers import JobsupServer, timestamp
from bench.session import Session
from bench.stats import Row, Summary, Target
from supervisor.settings import Settings

CHATTY_JOBS = 4
CHATTY_RATE = 1000


def _finished_job(server: JobsupServer) -> str:
    job_id = server.submit({"type": "bench_noop"})
    server.wait_status(job_id, ("completed",))
    return job_id


def _status_url(server: JobsupServer, job_id: str) -> str:
    return f"{server.url}/admin/jobs/{job_id}/status"


def _running(server: JobsupServer, body: dict[str, object], count: int) -> list[str]:
    ids = [server.submit(body) for _ in range(count)]
    for job_id in ids:
        server.wait_status(job_id, ("running",))
    return ids


def _median(results: list[load.LoadResult]) -> tuple[float, Summary]:
    """The median rate and the median of each latency percentile over the rounds."""

    def mid(pick: Callable[[Summary], float | None]) -> float:
        return statistics.median(float(pick(r.latency_ms) or 0) for r in results)

    rate = statistics.median(r.rate for r in results)
    n = sum(r.requests for r in results)
    p999 = mid(lambda s: s.p999)
    return rate, Summary(mid(lambda s: s.p50), mid(lambda s: s.p95), mid(lambda s: s.p99), n, p999)


def _raw(results: list[load.LoadResult]) -> list[dict[str, object]]:
    return [
        {
            "requests": r.requests,
            "seconds": r.seconds,
            "errors": r.errors,
            "rate": r.rate,
            "latency_ms": r.latency_ms.__dict__,
            "tool": r.tool,
        }
        for r in results
    ]


class Pauses:
    """The longest event-loop pause and GC pass of a traced server, per kind of round."""

    def __init__(self, server: JobsupServer) -> None:
        self.server = server
        self.longest: dict[str, dict[str, float]] = {}

    @contextmanager
    def window(self, kind: str) -> Iterator[None]:
        since = time.time()
        yield
        seen = self.server.pauses(since, time.time())
        mine = self.longest.setdefault(kind, {"loop": 0.0, "loop_cpu": 0.0, "gc": 0.0})
        for what, seconds in seen.items():
            mine[what] = max(mine[what], seconds)

    def row(self, label: str) -> Row:
        busy, idle = self.longest["busy"], self.longest["idle"]
        return Row(
            f"loop pause, {label}",
            "ms",
            Summary.single(busy["loop"] * 1000),
            "jobsup idle",
            Summary.single(idle["loop"] * 1000),
            None,
            f"on CPU {busy['loop_cpu'] * 1000:.1f} ms, idle {idle['loop_cpu'] * 1000:.1f};"
            f" GC {busy['gc'] * 1000:.1f}, idle {idle['gc'] * 1000:.1f}",
            extra={"longest_s": self.longest},
        )


def _rows(
    label: str, note: str, runs: dict[str, list[load.LoadResult]], pauses: Pauses
) -> list[Row]:
    busy_rate, busy = _median(runs["busy"])
    bare_rate, _ = _median(runs["bare"])
    _, idle = _median(runs["idle"])
    extra = {name: _raw(results) for name, results in runs.items()}
    return [
        Row(
            f"api req/s, {label}",
            "req/s",
            Summary.single(busy_rate),
            "bare route",
            Summary.single(bare_rate),
            Target(">=", 0.7),
            note,
            extra=extra,
        ),
        Row(
            f"api latency, {label}", "ms", busy, "jobsup idle", idle, Target("<=", 2), metric="p99"
        ),
        pauses.row(label),
    ]


def api(session: Session) -> list[Row]:
    server = session.jobsup("jobsup-api")
    pauses = Pauses(server)
    bare_url = f"{session.bare_server().url}/bare"
    seconds, rounds = session.count(3, 2), session.count(5, 1)
    idle_url = _status_url(server, _finished_job(server))
    chatty = {"type": "bench_chatty", "rate": CHATTY_RATE, "seconds": seconds + 30}
    runs: dict[str, list[load.LoadResult]] = {"idle": [], "bare": [], "busy": []}
    sent = 0.0
    for _ in range(rounds):
        with pauses.window("idle"):
            runs["idle"].append(load.generate(idle_url, seconds, headers=server.headers))
        runs["bare"].append(load.generate(bare_url, seconds))
        ids = _running(server, chatty, CHATTY_JOBS)
        before = sum(server.status(i)["progress"]["processed"] for i in ids)
        with pauses.window("busy"):
            runs["busy"].append(
                load.generate(_status_url(server, ids[0]), seconds, headers=server.headers)
            )
        sent += sum(server.status(i)["progress"]["processed"] for i in ids) - before
        for job_id in ids:
            server.cancel(job_id)
    rate = sent / sum(r.seconds for r in runs["busy"])
    note = f"{rate:,.0f} progress msg/s meanwhile, {runs['busy'][0].tool}"
    return _rows(f"{CHATTY_JOBS} jobs x {CHATTY_RATE:,} msg/s", note, runs, pauses)


def auth(session: Session) -> list[Row]:
    """GET status with authentication on (a bearer token checked on every request)
    against the same server code with ``JOBSUP_AUTH=off``; rounds and medians."""
    on, off = session.jobsup("jobsup-api"), session.jobsup("jobsup-open")
    seconds, rounds = session.count(3, 2), session.count(5, 1)
    on_url, off_url = _status_url(on, _finished_job(on)), _status_url(off, _finished_job(off))
    runs: dict[str, list[load.LoadResult]] = {"on": [], "off": []}
    for _ in range(rounds):
        runs["off"].append(load.generate(off_url, seconds))
        runs["on"].append(load.generate(on_url, seconds, headers=on.headers))
    errors = sum(r.errors for results in runs.values() for r in results)
    if errors:
        raise RuntimeError(f"{errors} requests failed (401?) while measuring auth on/off")
    on_rate, _ = _median(runs["on"])
    off_rate, _ = _median(runs["off"])
    return [
        Row(
            "api req/s, auth on",
            "req/s",
            Summary.single(on_rate),
            "auth off",
            Summary.single(off_rate),
            Target(">=", 0.95),
            f"GET status, bearer token, {runs['on'][0].tool}",
            extra={name: _raw(results) for name, results in runs.items()},
        )
    ]


def _flood(server: JobsupServer, seconds: float) -> float:
    """Progress messages a second one flooding child got into the table."""
    job_id = server.submit({"type": "bench_flood", "seconds": seconds})
    job = server.wait_status(job_id, ("completed",), timeout=seconds + 60)
    elapsed = timestamp(job["completedAt"]) - timestamp(job["startedAt"])
    return float(job["result"]["sent"] / elapsed)


def progress(session: Session) -> list[Row]:
    server = session.jobsup("jobsup-api")
    forkserver = session.forkserver()
    count, seconds = session.count(300_000, 30_000), session.count(2, 1)
    raw: list[float] = []
    ours: list[float] = []
    for _ in range(session.count(3, 1)):
        raw.append(forkserver.pipe_rate(count))
        ours.append(_flood(server, seconds))
    extra = {"jobsup_msg_per_s": ours, "raw_msg_per_s": raw}
    row = Row(
        "progress into the table",
        "msg/s",
        Summary.single(statistics.median(ours)),
        "raw send_bytes",
        Summary.single(statistics.median(raw)),
        Target(">=", 0.5),
        extra=extra,
    )
    return [row, *_api_during_flood(session, server)]


def _api_during_flood(session: Session, server: JobsupServer) -> list[Row]:
    """The API rows again while one child floods; rounds and medians, as for chatty jobs.

    A control row measures the bare route while a bare CPU burner runs (a
    Python busy loop at the jobs' nice level): what any process keeping a
    core busy costs the API on this machine, with no jobsup in the way.
    """
    seconds, rounds = session.count(3, 2), session.count(3, 1)
    pauses = Pauses(server)
    runs: dict[str, list[load.LoadResult]] = {"idle": [], "bare": [], "busy": [], "burner": []}
    bare_url = f"{session.bare_server().url}/bare"
    rates = []
    for _ in range(rounds):
        idle_url = _status_url(server, _finished_job(server))
        with pauses.window("idle"):
            runs["idle"].append(load.generate(idle_url, seconds, headers=server.headers))
        runs["bare"].append(load.generate(bare_url, seconds))
        with _cpu_burner():
            runs["burner"].append(load.generate(bare_url, seconds))
        (job_id,) = _running(server, {"type": "bench_flood", "seconds": seconds + 1}, 1)
        with pauses.window("busy"):
            runs["busy"].append(
                load.generate(_status_url(server, job_id), seconds, headers=server.headers)
            )
        job = server.wait_status(job_id, ("completed",), timeout=seconds + 60)
        elapsed = timestamp(job["completedAt"]) - timestamp(job["startedAt"])
        rates.append(job["result"]["sent"] / elapsed)
    note = f"{statistics.median(rates):,.0f} msg/s meanwhile, {runs['busy'][0].tool}"
    burner_rate, _ = _median(runs["burner"])
    bare_rate, _ = _median(runs["bare"])
    control = Row(
        "api req/s, bare route + CPU burner",
        "req/s",
        Summary.single(burner_rate),
        "bare route",
        Summary.single(bare_rate),
        None,
        "a busy loop at the jobs' nice",
    )
    return [*_rows("1 job flooding", note, runs, pauses), control]


@contextmanager
def _cpu_burner() -> Iterator[None]:
    nice = Settings.from_env().child_nice  # the bench's servers read the same environment
    burner = subprocess.Popen(
        [sys.executable, "-c", "while True: pass"], preexec_fn=lambda: os.nice(nice)
    )
    try:
        yield
    finally:
        burner.kill()
        burner.wait()
