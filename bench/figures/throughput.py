"""Job throughput: no-op jobs, one child each, concurrency 2, against RQ with 2
workers, Celery's prefork pool with 2 processes, and the fork limit.

Every system gets the whole batch queued first and is timed on the drain,
from the first job's start to the last job's end by its own timestamps:
submission costs (HTTP requests for jobsup, one Redis pipeline for RQ,
``apply_async`` calls for Celery) and the clients' CPU stay out of the
figure. On jobsup, two blocking jobs hold both slots while the batch is
submitted; on Celery, two blocking tasks; on RQ, ``enqueue_many`` puts it in
the queue in one pipeline. The fork limit (``bench.forklimit``) is a bare
loop forking children from a warm Python process, two at a time, each handed
one message on a pipe and reaped: the ceiling of one process per job here.

The CPU rows split what a jobsup drain cost, per job, between the front
process, the forkserver and the job children (the forkserver's reaped
children, spares included), from /proc; the fork limit's parent and
children are the same split for the bare loop.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
from typing import Any

import httpx

from bench import load
from bench.figures.common import baselines
from bench.servers import ROOT, JobsupServer, timestamp
from bench.session import SERVERS, Session
from bench.stats import Row, Summary, Target

SUBMITTERS = 4
ROUNDS = 2
SLOTS = int(SERVERS["jobsup"]["JOBSUP_MAX_CONCURRENT_JOBS"])


async def _submit(
    url: str, headers: dict[str, str], count: int, body: dict[str, Any] | None = None
) -> list[str]:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:

        async def submitter(share: int) -> list[str]:
            ids = []
            for _ in range(share):
                response = await client.post(
                    "/admin/jobs/start", json=body or {"type": "bench_noop"}
                )
                if response.status_code != 202:
                    raise RuntimeError(f"start answered {response.status_code}: {response.text}")
                ids.append(response.json()["jobId"])
            return ids

        shares = [count // SUBMITTERS + (i < count % SUBMITTERS) for i in range(SUBMITTERS)]
        return [i for ids in await asyncio.gather(*map(submitter, shares)) for i in ids]


def _jobs(server: JobsupServer, ids: list[str]) -> list[dict[str, Any]]:
    """Our jobs as the list API returns them, newest first, page by page."""
    wanted, found = set(ids), []
    params: dict[str, Any] = {"limit": 1000}
    while len(found) < len(wanted):
        response = server.client.get("/admin/jobs", params=params)
        page = response.json()
        found += [job for job in page if job["id"] in wanted]
        if "x-next-before" not in response.headers:
            break
        params["before"] = response.headers["x-next-before"]
    return found


def run_jobs(server: JobsupServer, count: int) -> None:
    """Submit ``count`` no-op jobs and wait until the server has run them all."""
    if count > 0:
        asyncio.run(_submit(server.url, server.headers, count))
    server.wait_idle(count)


def jobsup_drain(server: JobsupServer, count: int, body: dict[str, Any] | None = None) -> float:
    """No-op jobs a second, from the first start to the last end, with all queued first."""
    return drain_with_cpu(server, count, body)[0]


def drain_with_cpu(
    server: JobsupServer, count: int, body: dict[str, Any] | None = None
) -> tuple[float, dict[str, float]]:
    """A drain's rate, and the CPU milliseconds per job it cost each process.

    "front" is the front process during the drain alone (from the release of
    the held slots until idle), "front, submit" its CPU to accept the batch
    over HTTP, beforehand.
    """
    blockers = [server.submit({"type": "bench_wait", "stepMs": 600_000}) for _ in range(SLOTS)]
    for job_id in blockers:
        server.wait_status(job_id, ("running",))
    before_submit = server.cpu_seconds()
    ids = asyncio.run(_submit(server.url, server.headers, count, body))
    before = server.cpu_seconds()
    for job_id in blockers:
        server.cancel(job_id)
    server.wait_idle(count)
    after = server.cpu_seconds()
    jobs = _jobs(server, ids)
    failed = [job for job in jobs if job["status"] != "completed"]
    if len(jobs) != count or failed:
        raise RuntimeError(f"{len(jobs)} of {count} jobs found, {len(failed)} not completed")
    first = min(timestamp(job["startedAt"]) for job in jobs)
    last = max(timestamp(job["completedAt"]) for job in jobs)
    ms = {name: (after[name] - before[name]) * 1000 / count for name in before}
    ms["front, submit"] = (before["front"] - before_submit["front"]) * 1000 / count
    return count / (last - first), ms


def fork_limit(count: int) -> dict[str, float]:
    """The bare fork loop of ``bench.forklimit``, in its own small process."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.forklimit", str(count), str(SLOTS)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(done.stdout.splitlines()[-1]))


def throughput(session: Session) -> list[Row]:
    server = session.jobsup()
    count = session.count(2000, 100)
    share = count // ROUNDS
    ready, missing = baselines({"RQ": session.rq, "Celery": session.celery})
    rates: dict[str, list[float]] = {"jobsup": [], "RQ": [], "Celery": [], "fork limit": []}
    cpu: list[dict[str, float]] = []
    limits: list[dict[str, float]] = []
    for _ in range(ROUNDS):  # in turns, so drift on a shared machine hits all alike
        rate, ms = drain_with_cpu(server, share)
        rates["jobsup"].append(rate)
        cpu.append(ms)
        for name, baseline in ready.items():
            rates[name].append(baseline.drain(share))
        limits.append(fork_limit(share))
        rates["fork limit"].append(limits[-1]["jobs_per_s"])
    ours = Summary.single(statistics.median(rates["jobsup"]))
    extra = {"jobs_per_s": rates, "jobs_per_round": share, "cpu_ms": cpu, "fork_limit": limits}
    targets = {
        "RQ": ("RQ (2 workers)", Target(">=", 3)),
        "Celery": ("Celery prefork (2 processes)", Target(">=", 1)),
        "fork limit": ("fork limit (bare fork + pipe + reap)", Target(">=", 0.5)),
    }
    rows = []
    for name, (label, target) in targets.items():
        if name in missing:
            rows.append(
                Row(
                    "throughput",
                    "jobs/s",
                    ours,
                    label,
                    None,
                    target,
                    f"unavailable: {missing[name]}",
                )
            )
            continue
        theirs = Summary.single(statistics.median(rates[name]))
        rows.append(Row("throughput", "jobs/s", ours, label, theirs, target, extra=extra))
    bare_ms = {
        "front": statistics.median(x["parent_ms"] for x in limits),
        "children": statistics.median(x["child_ms"] for x in limits),
        "child faults": statistics.median(x["child_faults"] for x in limits),
    }
    processes = (
        ("front", "front"),
        ("forkserver", "forkserver"),
        ("children", "child"),
        ("front, submit", "front, submit over HTTP"),
        ("child faults", "child page faults"),
    )
    for process, label in processes:
        ms = Summary.single(statistics.median(x[process] for x in cpu))
        base = bare_ms.get(process)
        faults = process == "child faults"
        rows.append(
            Row(
                f"per no-op job, {label}" if faults else f"CPU per no-op job, {label}",
                "faults" if faults else "ms",
                ms,
                "fork limit's " + ("parent" if process == "front" else "child") if base else "-",
                None if base is None else Summary.single(base),
                None,
                extra={"cpu_ms": cpu},
            )
        )
    return rows


def submit(session: Session) -> list[Row]:
    """Jobs accepted a second over HTTP (50 connections), all queued behind held slots,
    against RQ ``enqueue`` and Celery ``apply_async`` calls from one client."""
    server = session.jobsup("jobsup-submit")
    seconds, rounds = session.count(3, 1), session.count(3, 1)
    blockers = [server.submit({"type": "bench_wait", "stepMs": 600_000}) for _ in range(SLOTS)]
    for job_id in blockers:
        server.wait_status(job_id, ("running",))
    ready, missing = baselines({"RQ": session.rq, "Celery": session.celery})
    url = f"{server.url}/admin/jobs/start"
    runs: list[load.LoadResult] = []
    rates: dict[str, list[float]] = {"RQ": [], "Celery": []}
    for _ in range(rounds):
        runs.append(
            load.generate(url, seconds, headers=server.headers, body={"type": "bench_noop"})
        )
        for name, baseline in ready.items():
            rates[name].append(baseline.submit_rate(seconds))
    errors = sum(r.errors for r in runs)
    if errors:
        raise RuntimeError(f"{errors} starts were refused while measuring the submit rate")
    ours = Summary.single(statistics.median(r.rate for r in runs))
    latency = statistics.median(r.latency_ms.p50 for r in runs)
    note = f"{runs[0].tool}, 50 connections, p50 {latency:.1f} ms"
    extra = {"jobsup_per_s": [r.rate for r in runs], **rates}
    rows = []
    for name, call in (("RQ", "enqueue"), ("Celery", "apply_async")):
        label = f"{name} {call}, one client"
        if name in missing:
            rows.append(
                Row(
                    "submit rate",
                    "jobs/s",
                    ours,
                    label,
                    None,
                    None,
                    f"unavailable: {missing[name]}",
                )
            )
            continue
        theirs = Summary.single(statistics.median(rates[name]))
        rows.append(Row("submit rate", "jobs/s", ours, label, theirs, None, note, extra=extra))
    return rows
