"""Start latency (POST -> the job's first line), cancel latency (POST cancel -> exited),
pause latency (POST pause -> paused) and resume latency (POST resume -> its next tick).

Jobs run one at a time on an otherwise idle server, so the figures are the
machinery's own latency, not queueing.
"""

from __future__ import annotations

import time
from typing import Any

from bench.figures.common import baselines, interleave, latency_rows
from bench.servers import JobsupServer, poll, timestamp
from bench.session import Session
from bench.stats import Row, Summary, Target

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


def _post(server: JobsupServer, job_id: str, action: str) -> dict[str, Any]:
    response = server.client.post(f"/admin/jobs/{job_id}/{action}")
    if response.status != 200:
        raise RuntimeError(f"{action} answered {response.status}: {response.body!r}")
    return dict(response.json())


def jobsup_pause(server: JobsupServer, resumes: list[float]) -> float:
    """POST pause on a ticking job until its 200 ``paused``; then POST resume until its next tick.

    Pause: the answer comes once the child has reported that it holds and
    the state is stored. Resume: the tick the child stamps (wall clock) just
    after it goes on, minus the client's clock before the POST; appended to
    ``resumes``. The job ticks every 2 ms in ``ctx.sleep``, as a removal
    waits out its delay.
    """
    job_id = server.submit({"type": "bench_tick", "tickMs": 2})
    server.wait_status(job_id, ("running",), interval=POLL_S)
    before = time.perf_counter()
    answer = _post(server, job_id, "pause")
    elapsed = time.perf_counter() - before
    if answer["status"] != "paused":
        raise RuntimeError(f"pause of {job_id} answered {answer}")
    sent = time.time()
    _post(server, job_id, "resume")

    def ticked() -> float | None:
        stamp = float(server.status(job_id)["progress"]["message"] or 0)
        return stamp if stamp > sent else None

    resumes.append(poll(ticked, 30, POLL_S) - sent)
    server.cancel(job_id)
    return elapsed


def jobsup_tick_cancel(server: JobsupServer) -> float:
    """POST cancel on the same kind of ticking job, until its 200 ``cancelled``."""
    job_id = server.submit({"type": "bench_tick", "tickMs": 2})
    server.wait_status(job_id, ("running",), interval=POLL_S)
    before = time.perf_counter()
    answer = server.cancel(job_id)
    elapsed = time.perf_counter() - before
    if answer["status"] != "cancelled":
        raise RuntimeError(f"cancel of {job_id} answered {answer}")
    return elapsed


def pause(session: Session) -> list[Row]:
    """Pause and resume latency, beside the cancel latency of the same jobs in the same run."""
    server = session.jobsup()
    resumes: list[float] = []
    samplers = {
        "jobsup": lambda: jobsup_pause(server, resumes),
        "cancel": lambda: jobsup_tick_cancel(server),
    }
    samples = interleave(samplers, session.count(50, 5))
    resumes = resumes[-len(samples["jobsup"]) :]  # the warm-up's are left out
    rows = latency_rows("pause latency", samples, {"cancel": None}, {})
    rows.append(
        Row(
            "resume latency",
            "ms",
            Summary.of(resumes, 1000),
            "pause latency",
            Summary.of(samples["jobsup"], 1000),
            None,
            extra={"resume_s": resumes},
        )
    )
    return rows
