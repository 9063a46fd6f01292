"""Memory and scale: a server filled with finished jobs, measured on the way.

One fill serves both figures: no-op jobs run (each in its own child) until
1,000 and then 10,000 finished jobs are in the table; front-process RSS and
list latency are taken at both points, so the memory per job is a slope,
free of start-up costs. Admission order is measured on a one-slot server: a
job holds the slot while 1,000 no-op jobs queue behind it; once it is
released their ``startedAt`` must follow submission order.

Large results have their own server: a 100,000-member group, dry runs over
it one after another (each reports every member), and the front's RSS once
20 of them have finished, against the same server before the first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.figures.throughput import run_jobs
from bench.servers import JobsupServer, rss_bytes, timestamp, uss_bytes
from bench.session import Session
from bench.stats import Row, Summary, Target

LIST_PARAMS = {"status": "completed", "limit": 100}
RESULT_JOBS = 20


@dataclass
class Fill:
    rss_empty: int
    child_uss: int
    rss: dict[int, int]  # jobs in the table -> front process RSS
    list_s: dict[int, list[float]]  # jobs in the table -> list latencies


@dataclass
class Admission:
    count: int
    seconds: float
    out_of_order: int | None  # index of the first job started out of order


def _blocker(server: JobsupServer) -> tuple[str, int]:
    job_id = server.submit({"type": "bench_wait", "steps": 1, "stepMs": 600_000})
    return job_id, int(server.wait_status(job_id, ("running",))["pid"])


def _list_latencies(server: JobsupServer, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        before = time.perf_counter()
        server.client.get("/admin/jobs", params=LIST_PARAMS).raise_for_status()
        latencies.append(time.perf_counter() - before)
    return latencies


def _fill(session: Session) -> Fill:
    server = session.jobsup("jobsup-bulk")
    samples = session.count(200, 30)
    run_jobs(server, 4)  # warm the launch path, the routes and lazy imports
    _list_latencies(server, 20)
    rss_empty = rss_bytes(server.pid)
    blocker, child_pid = _blocker(server)
    fill = Fill(rss_empty, uss_bytes(child_pid), {}, {})
    server.cancel(blocker)
    for target in (session.count(1000, 100), session.count(10_000, 1000)):
        run_jobs(server, target - server.health()["jobsInMemory"])
        jobs = server.health()["jobsInMemory"]
        fill.rss[jobs] = rss_bytes(server.pid)
        fill.list_s[jobs] = _list_latencies(server, samples)
    return fill


def _admission(session: Session) -> Admission:
    """Queue jobs behind a blocker on a one-slot server, release it, time until all ran."""
    server = session.jobsup("jobsup-order")
    blocker, _pid = _blocker(server)
    ids = [server.submit({"type": "bench_noop"}) for _ in range(session.count(1000, 100))]
    before = time.perf_counter()
    server.cancel(blocker)
    server.wait_idle(len(ids))
    seconds = time.perf_counter() - before
    started = [timestamp(server.status(i)["startedAt"]) for i in ids]
    late = next((i for i in range(1, len(started)) if started[i] <= started[i - 1]), None)
    return Admission(len(ids), seconds, late)


def memory(session: Session) -> list[Row]:
    fill: Fill = session.shared("fill", lambda: _fill(session))
    (small, rss_small), (large, rss_large) = sorted(fill.rss.items())
    per_job = (rss_large - rss_small) / (large - small)
    mib = 1 / 2**20
    note = f"RSS {fill.rss_empty * mib:.0f} MiB; {rss_large * mib:.0f} MiB at {large:,} jobs"
    bare_uss = session.forkserver().child_uss()
    extra = {"rss_empty": fill.rss_empty, "rss_by_jobs": fill.rss}
    return [
        Row(
            "memory per finished job",
            "B/job",
            Summary.single(per_job),
            "empty server",
            None,
            Target("<=", 1024, absolute=True),
            note,
            extra=extra,
        ),
        Row(
            "child USS",
            "KiB",
            Summary.single(fill.child_uss / 1024),
            "bare forkserver child",
            Summary.single(bare_uss / 1024),
            None,
        ),
    ]


def scale(session: Session) -> list[Row]:
    fill: Fill = session.shared("fill", lambda: _fill(session))
    (small, lat_small), (large, lat_large) = sorted(fill.list_s.items())
    admission = _admission(session)
    order = (
        "in submission order"
        if admission.out_of_order is None
        else f"job #{admission.out_of_order} started out of order"
    )
    return [
        Row(
            f"list, {large:,} vs {small:,} jobs",
            "ms",
            Summary.of(lat_large, 1000),
            f"{small:,} jobs",
            Summary.of(lat_small, 1000),
            Target("<=", 1.5),
            extra={"list_s": fill.list_s},
        ),
        Row(
            f"admit {admission.count:,} pending",
            "jobs/s",
            Summary.single(admission.count / admission.seconds),
            "-",
            None,
            None,
            order,
            passed=admission.out_of_order is None,
            extra={"admission": admission.__dict__},
        ),
    ]


def _large_group(members: int) -> dict[str, Any]:
    """Every member inactive (LIDs, the shortest real ids): a dry run lists them all."""
    return {
        "name": "bench large group",
        "members": [
            {
                "whatsappId": f"{5511900000000 + i}@s.whatsapp.net",
                "joinedAt": "2020-01-01T00:00:00Z",
            }
            for i in range(members)
        ],
    }


def _dry_run(server: JobsupServer) -> None:
    body = {
        "type": "removal_workflow",
        "groupWaId": "large",
        "batchSize": 10_000,
        "delayMs": 0,
        "dryRun": True,
        "inactivityWindowMs": 86_400_000,
    }
    job_id = server.submit(body)
    job = server.wait_status(
        job_id, ("completed", "failed", "cancelled"), timeout=300, interval=0.05
    )
    if job["status"] != "completed":
        raise RuntimeError(f"dry run {job_id} ended {job['status']}: {job.get('error')}")


def results(session: Session) -> list[Row]:
    members = session.count(100_000, 10_000)
    server = session.jobsup("jobsup-results")
    server.client.request(
        "PUT", "/admin/groups/large", body=_large_group(members)
    ).raise_for_status()
    _dry_run(server)  # warm the path: imports, the first result's buffers
    before = rss_bytes(server.pid)
    started = time.perf_counter()
    for _ in range(RESULT_JOBS - 1):
        _dry_run(server)
    seconds = time.perf_counter() - started
    after = rss_bytes(server.pid)
    mib = 1 / 2**20
    per_run = seconds / (RESULT_JOBS - 1)
    return [
        Row(
            f"RSS, {RESULT_JOBS} finished {members:,}-member dry runs",
            "MiB",
            Summary.single(after * mib),
            "after the first",
            Summary.single(before * mib),
            Target("<=", 1.25),
            f"{(after - before) * mib:.1f} MiB more; {per_run:.1f} s per dry run",
            extra={"rss_before": before, "rss_after": after, "members": members},
        )
    ]
