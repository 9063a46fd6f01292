"""What per-job limits cost: start latency and throughput with every limit set, against none.

The same server, no-op jobs, samples taken in turns (latency) and rounds
alternated (throughput), so drift on a shared machine hits both alike.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.figures.common import interleave
from bench.figures.latency import jobsup_start
from bench.figures.throughput import ROUNDS, jobsup_drain
from bench.session import Session
from bench.stats import Row, Summary, Target

LIMITED: dict[str, Any] = {
    "type": "bench_noop",
    "limits": {"timeoutS": 60, "cpuS": 60, "memoryMiB": 1024, "openFiles": 1024},
}


def limits(session: Session) -> list[Row]:
    server = session.jobsup()
    samples = interleave(
        {"on": lambda: jobsup_start(server, LIMITED), "off": lambda: jobsup_start(server)},
        session.count(200, 20),
    )
    share = session.count(2000, 100) // ROUNDS
    on: list[float] = []
    off: list[float] = []
    for _ in range(ROUNDS):
        on.append(jobsup_drain(server, share, LIMITED))
        off.append(jobsup_drain(server, share))
    return [
        Row(
            "start latency, limits on",
            "ms",
            Summary.of(samples["on"], 1000),
            "limits off",
            Summary.of(samples["off"], 1000),
            Target("<=", 1.11),  # at least 0.9x as fast
            extra={"on_s": samples["on"], "off_s": samples["off"]},
        ),
        Row(
            "throughput, limits on",
            "jobs/s",
            Summary.single(statistics.median(on)),
            "limits off",
            Summary.single(statistics.median(off)),
            Target(">=", 0.9),
            extra={"on_jobs_per_s": on, "off_jobs_per_s": off, "jobs_per_round": share},
        ),
    ]
