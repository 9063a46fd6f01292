"""A burst of webhook deliveries, and the job API meanwhile.

A separate process sends 1,000 Evolution deliveries (``bench.webhook_burst``:
messages and member additions, each from another member of one group) over
50 connections, as fast as jobsup answers them. Meanwhile this process
times GET status of a finished job, one request at a time with 2 ms between
them, as a dashboard polling would. Two baselines in the same run: the same
sampling with nothing else going on (idle), and during the same burst of
deliveries that jobsup answers without a write (``connection.update``
events: the HTTP traffic alone, the control). Rounds alternate the three;
each figure is the median over the rounds.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from typing import Any

from bench.servers import ROOT, JobsupServer
from bench.session import Session
from bench.stats import Row, Summary, Target

SECRET = "bench-webhook-secret"
CONNECTIONS = 50
PAUSE_S = 0.002  # between two status requests: a client polling, not a load generator


def _sample(server: JobsupServer, path: str, until: Any) -> list[tuple[float, float]]:
    """(wall time, ms) of GET ``path``, one at a time, until a time or a process's end."""
    samples: list[tuple[float, float]] = []
    while time.time() < until if isinstance(until, float) else until.poll() is None:
        began = time.perf_counter()
        response = server.client.get(path)
        samples.append((time.time(), (time.perf_counter() - began) * 1000))
        response.raise_for_status()
        time.sleep(PAUSE_S)
    return samples


def _burst(
    server: JobsupServer, path: str, group: str, count: int, kind: str
) -> tuple[list[float], dict[str, Any]]:
    """Status latencies (ms) during one burst, and the burst's own report."""
    url = f"{server.url}/webhooks/evolution"
    command = [sys.executable, "-m", "bench.webhook_burst", url, SECRET, group, str(count)]
    burst = subprocess.Popen(
        [*command, str(CONNECTIONS), kind], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    samples = _sample(server, path, burst)
    out, _ = burst.communicate(timeout=120)
    if burst.returncode != 0:
        raise RuntimeError(f"the burst exited with {burst.returncode}")
    report: dict[str, Any] = json.loads(out)
    return [ms for at, ms in samples if report["began"] <= at <= report["ended"]], report


def _median(summaries: list[Summary]) -> Summary:
    def mid(values: list[float | None]) -> float:
        return statistics.median(float(v or 0) for v in values)

    return Summary(
        mid([s.p50 for s in summaries]),
        mid([s.p95 for s in summaries]),
        mid([s.p99 for s in summaries]),
        sum(s.n for s in summaries),
    )


def webhooks(session: Session) -> list[Row]:
    server = session.jobsup("jobsup-webhooks")
    count, rounds = 1000, session.count(5, 1)
    group = f"120363{int(time.time() * 1000)}@g.us"  # a new one: its members all new
    admin = {"whatsappId": "5511900000000@s.whatsapp.net", "isAdmin": True}
    body = {"name": "bench", "members": [{**admin, "joinedAt": "2025-01-01T00:00:00Z"}]}
    server.client.request("PUT", f"/admin/groups/{group}", body=body).raise_for_status()
    job_id = server.submit({"type": "bench_noop"})
    server.wait_status(job_id, ("completed",))
    path = f"/admin/jobs/{job_id}/status"
    runs: dict[str, list[Summary]] = {"idle": [], "busy": [], "control": [], "delivery": []}
    rates: list[float] = []
    failed = 0
    for _ in range(rounds):
        busy, report = _burst(server, path, group, count, "apply")
        runs["busy"].append(Summary.of(busy))
        runs["delivery"].append(Summary.of(report["latency_ms"]))
        seconds = report["ended"] - report["began"]
        rates.append(count / seconds)
        failed += sum(n for code, n in report["codes"].items() if code != "200")
        control, report = _burst(server, path, group, count, "ignored")
        runs["control"].append(Summary.of(control))
        failed += sum(n for code, n in report["codes"].items() if code != "200")
        idle = _sample(server, path, time.time() + max(seconds, 1.0))
        runs["idle"].append(Summary.of([ms for _, ms in idle]))
    members = server.client.get(f"/admin/groups/{group}").json()["memberCount"]
    note = f"{statistics.median(rates):,.0f} deliveries/s, {failed} not 200, {members} members"
    label = f"status during {count:,} webhooks"
    verdict = None if failed == 0 and members == count + 1 else False
    extra = {"rates": rates, "failed": failed, "members": members}
    busy = _median(runs["busy"])
    return [
        Row(
            label,
            "ms",
            busy,
            "jobsup idle",
            _median(runs["idle"]),
            Target("<=", 2),
            note,
            metric="p99",
            passed=verdict,
            extra=extra,
        ),
        Row(
            label,
            "ms",
            busy,
            "the same burst, ignored (HTTP alone)",
            _median(runs["control"]),
            Target("<=", 1.5),
            metric="p99",
        ),
        Row(
            f"webhook delivery, burst of {count:,}",
            "ms",
            _median(runs["delivery"]),
            f"- ({CONNECTIONS} connections)",
            target=Target("<=", 1000, absolute=True),
            metric="p99",
        ),
    ]
