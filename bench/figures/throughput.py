"""Job throughput: no-op jobs, one child each, concurrency 2, against RQ with 2 workers.

Both systems get the whole batch queued first and are timed on the drain,
from the first job's start to the last job's end by their own timestamps:
submission costs (HTTP requests for jobsup, one Redis pipeline for RQ) and
the clients' CPU stay out of the figure. On jobsup, two blocking jobs hold
both slots while the batch is submitted; on RQ, ``enqueue_many`` puts it in
the queue in one pipeline.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import httpx

from bench.redis_baselines import Unavailable
from bench.servers import JobsupServer, timestamp
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
    blockers = [server.submit({"type": "bench_wait", "stepMs": 600_000}) for _ in range(SLOTS)]
    for job_id in blockers:
        server.wait_status(job_id, ("running",))
    ids = asyncio.run(_submit(server.url, server.headers, count, body))
    for job_id in blockers:
        server.cancel(job_id)
    server.wait_idle(count)
    jobs = _jobs(server, ids)
    failed = [job for job in jobs if job["status"] != "completed"]
    if len(jobs) != count or failed:
        raise RuntimeError(f"{len(jobs)} of {count} jobs found, {len(failed)} not completed")
    first = min(timestamp(job["startedAt"]) for job in jobs)
    last = max(timestamp(job["completedAt"]) for job in jobs)
    return count / (last - first)


def throughput(session: Session) -> list[Row]:
    server = session.jobsup()
    count = session.count(2000, 100)
    share = count // ROUNDS
    ours: list[float] = []
    theirs: list[float] = []
    try:
        rq = session.rq()
    except Unavailable as exc:
        rate = Summary.single(jobsup_drain(server, count))
        return [
            Row("throughput", "jobs/s", rate, "RQ", None, Target(">=", 2), f"unavailable: {exc}")
        ]
    for _ in range(ROUNDS):  # alternate, so drift on a shared machine hits both
        ours.append(jobsup_drain(server, share))
        theirs.append(rq.drain(share))
    extra = {"jobsup_jobs_per_s": ours, "rq_jobs_per_s": theirs, "jobs_per_round": share}
    return [
        Row(
            "throughput",
            "jobs/s",
            Summary.single(statistics.median(ours)),
            "RQ (2 workers)",
            Summary.single(statistics.median(theirs)),
            Target(">=", 2),
            extra=extra,
        )
    ]
