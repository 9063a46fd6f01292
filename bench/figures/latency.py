"""Start latency (POST -> the job's first line) and cancel latency (POST cancel -> exited).

Jobs run one at a time on an otherwise idle server, so the figures are the
machinery's own latency, not queueing.
"""

from __future__ import annotations

import time
from typing import Any

from bench.figures.common import baselines, interleave, latency_rows
from bench.servers import JobsupServer, timestamp
from bench.session import Session
from bench.stats import Row, Target

POLL_S = 0.003
# The first status poll waits this long: polling while the child starts would
# compete with it for the two cores, a cost the blocking baselines do not pay.
FIRST_POLL_S = 0.025


def jobsup_start(server: JobsupServer, body: dict[str, Any] | None = None) -> float:
    """``startedAt`` (stamped by the child before the job's first line) minus the POST time."""
    before = time.time()
    job_id = server.submit(body or {"type": "bench_noop"})
    time.sleep(FIRST_POLL_S)
    job = server.wait_status(job_id, ("completed", "failed", "cancelled"), interval=POLL_S)
    if job["status"] != "completed":
        raise RuntimeError(f"bench_noop job {job_id} ended {job['status']}: {job['error']}")
    return timestamp(job["startedAt"]) - before


def jobsup_cancel(server: JobsupServer) -> float:
    """POST cancel on a job waiting in ctx.sleep, until the 200 that says it is cancelled."""
    job_id = server.submit({"type": "bench_wait", "steps": 1, "stepMs": 60_000})
    server.wait_status(job_id, ("running",), interval=POLL_S)
    before = time.perf_counter()
    answer = server.cancel(job_id)
    elapsed = time.perf_counter() - before
    if answer["status"] != "cancelled":
        raise RuntimeError(f"cancel of {job_id} answered {answer}")
    return elapsed


def start(session: Session) -> list[Row]:
    server = session.jobsup()
    ready, missing = baselines(
        {"forkserver": session.forkserver, "RQ": session.rq, "Celery": session.celery}
    )
    samplers = {"jobsup": lambda: jobsup_start(server)}
    samplers.update({name: b.start_latency for name, b in ready.items()})
    samples = interleave(samplers, session.count(200, 20))
    targets = {"forkserver": Target("<=", 1.6), "RQ": Target("<=", 0.4), "Celery": None}
    return latency_rows("start latency", samples, targets, missing)


def cancel(session: Session) -> list[Row]:
    server = session.jobsup()
    ready, missing = baselines(
        {"Event.set": session.forkserver, "RQ": session.rq, "Celery": session.celery}
    )
    samplers = {"jobsup": lambda: jobsup_cancel(server)}
    samplers.update({name: b.cancel_latency for name, b in ready.items()})
    samples = interleave(samplers, session.count(100, 10))
    targets = {"Event.set": None, "RQ": Target("<=", 0.5), "Celery": Target("<=", 0.5)}
    return latency_rows("cancel latency", samples, targets, missing)
