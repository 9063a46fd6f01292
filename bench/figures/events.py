"""Event streams: many subscribers watching chatty jobs, against no subscribers.

500 SSE subscribers (``bench.subscribers``, one process of raw asyncio
connections) watch 4 jobs each sending 1,000 progress messages a second,
125 on each job's stream. Measured: GET status p99 meanwhile against the
idle server's (target <= 2x), how long the chatty jobs take against the
same jobs with nobody subscribed (no job slower), and the front process's
RSS growth per open subscriber (streams open on one quiet job).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from typing import Any

from bench import load
from bench.figures.api import _median
from bench.servers import ROOT, JobsupServer, rss_bytes, timestamp
from bench.session import Session
from bench.stats import Row, Summary, Target

CHATTY_JOBS = 4
CHATTY_RATE = 1000


class _Subscribers:
    """``bench.subscribers`` in a subprocess, on ``paths``."""

    def __init__(self, server: JobsupServer, paths: list[str]) -> None:
        headers: dict[str, str] = dict(getattr(server, "headers", None) or {})
        command = [sys.executable, "-m", "bench.subscribers", str(server.port)]
        self.process = subprocess.Popen(
            [*command, json.dumps(headers), *paths],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError("the subscribers did not get their streams")

    def close(self) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=60)
        return dict(json.loads(out.strip().splitlines()[-1]))


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loaded(server: JobsupServer, job_id: str, seconds: int, cpu: list[float]) -> load.LoadResult:
    """The status load on ``job_id``; the front process's CPU share meanwhile into ``cpu``."""
    used = _cpu_s(server.pid)
    result = load.generate(f"{server.url}/admin/jobs/{job_id}/status", seconds)
    cpu.append((_cpu_s(server.pid) - used) / result.seconds)
    return result


def _durations(server: JobsupServer, ids: list[str], timeout: float) -> list[float]:
    out = []
    for job_id in ids:
        job = server.wait_status(job_id, ("completed",), timeout=timeout, interval=0.05)
        out.append(timestamp(job["completedAt"]) - timestamp(job["startedAt"]))
    return out


def _start(server: JobsupServer, body: dict[str, Any]) -> list[str]:
    ids = [server.submit(body) for _ in range(CHATTY_JOBS)]
    for job_id in ids:
        server.wait_status(job_id, ("running",), interval=0.01)
    return ids


def events(session: Session) -> list[Row]:
    server = session.jobsup("jobsup-events")
    count = session.count(500, 100)
    seconds, rounds = session.count(3, 2), session.count(3, 1)
    # Long enough for the subscribers to connect before the timed load.
    chatty = {"type": "bench_chatty", "rate": CHATTY_RATE, "seconds": seconds + 6}
    timeout = chatty["seconds"] + 60

    finished = server.submit({"type": "bench_noop"})
    server.wait_status(finished, ("completed",))
    idle_url = f"{server.url}/admin/jobs/{finished}/status"

    # Memory: streams open on one quiet job.
    quiet = server.submit({"type": "bench_wait", "steps": 1, "stepMs": 600_000})
    server.wait_status(quiet, ("running",))
    before = rss_bytes(server.pid)
    subscribers = _Subscribers(server, [f"/admin/jobs/{quiet}/events"] * count)
    after = rss_bytes(server.pid)
    subscribers.close()
    server.cancel(quiet)
    per_subscriber = (after - before) / count

    # In rounds (idle, chatty jobs alone, chatty jobs watched), medians kept.
    runs: dict[str, list[load.LoadResult]] = {"idle": [], "alone": [], "watched": []}
    alone: list[float] = []
    watched: list[float] = []
    delivered = 0
    cpu_alone: list[float] = []
    cpu_watched: list[float] = []
    for _ in range(rounds):
        runs["idle"].append(load.generate(idle_url, seconds))
        ids = _start(server, chatty)
        runs["alone"].append(_loaded(server, ids[0], seconds, cpu_alone))
        alone += _durations(server, ids, timeout)
        ids = _start(server, chatty)
        paths = [f"/admin/jobs/{ids[i % CHATTY_JOBS]}/events" for i in range(count)]
        subscribers = _Subscribers(server, paths)
        runs["watched"].append(_loaded(server, ids[0], seconds, cpu_watched))
        watched += _durations(server, ids, timeout)
        delivered += subscribers.close()["events"]
    _, idle = _median(runs["idle"])
    _, quiet_jobs = _median(runs["alone"])
    _, busy = _median(runs["watched"])
    label = f"{count} subscribers x {CHATTY_JOBS} chatty jobs"
    note = f"{delivered / rounds:,.0f} events to subscribers a round, {runs['idle'][0].tool}"
    cpu_note = (
        f"front CPU under the load: {statistics.median(cpu_watched):.2f} s/s watched, "
        f"{statistics.median(cpu_alone):.2f} s/s alone"
    )
    return [
        Row(
            f"api latency, {label}",
            "ms",
            busy,
            "jobsup idle",
            idle,
            Target("<=", 2),
            note,
            metric="p99",
        ),
        Row(
            f"api latency, {CHATTY_JOBS} chatty jobs, no subscribers",
            "ms",
            quiet_jobs,
            "jobsup idle",
            idle,
            None,
            f"control: the chatty jobs alone; {cpu_note}",
            metric="p99",
        ),
        Row(
            f"chatty job duration, {label}",
            "s",
            Summary.single(statistics.median(watched)),
            "no subscribers",
            Summary.single(statistics.median(alone)),
            Target("<=", 1.1),
            extra={"with": watched, "without": alone},
        ),
        Row(
            "memory per open subscriber",
            "KiB",
            Summary.single(per_subscriber / 1024),
            f"RSS growth with {count} streams open",
            None,
            None,
            f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB",
        ),
    ]
