"""The figures of the suite, in the order they run, with the resources each needs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bench.figures import api, bulk, events, large, latency, limits, resume, throughput, webhooks
from bench.session import Session
from bench.stats import Row

LATENCY_NEEDS = frozenset({"jobsup", "forkserver", "rq", "celery"})


@dataclass(frozen=True)
class Figure:
    name: str
    run: Callable[[Session], list[Row]]
    needs: frozenset[str]


FIGURES = (
    Figure("start", latency.start, LATENCY_NEEDS),
    Figure("cancel", latency.cancel, LATENCY_NEEDS),
    Figure("pause", latency.pause, frozenset({"jobsup"})),
    Figure("throughput", throughput.throughput, frozenset({"jobsup", "rq", "celery"})),
    Figure("submit", throughput.submit, frozenset({"jobsup-submit", "rq", "celery"})),
    Figure("api", api.api, frozenset({"jobsup-api", "bare"})),
    Figure("auth", api.auth, frozenset({"jobsup-api", "jobsup-open"})),
    Figure("progress", api.progress, frozenset({"jobsup-api", "bare", "forkserver"})),
    Figure("memory", bulk.memory, frozenset({"jobsup-bulk", "forkserver"})),
    Figure("scale", bulk.scale, frozenset({"jobsup-bulk", "jobsup-order"})),
    Figure("results", bulk.results, frozenset({"jobsup-results"})),
    Figure("resume", resume.resume, frozenset({"jobsup-resume"})),
    Figure("events", events.events, frozenset({"jobsup-events"})),
    Figure("webhooks", webhooks.webhooks, frozenset({"jobsup-webhooks"})),
    Figure("limits", limits.limits, frozenset({"jobsup"})),
)
# Run only when named (--only): minutes each, and PostgreSQL (bench/figures/large.py).
ON_REQUEST = (
    Figure("backlog", large.backlog, frozenset()),
    Figure("history", large.history, frozenset()),
    Figure("cluster", large.cluster, frozenset()),
)
NAMES = tuple(f.name for f in (*FIGURES, *ON_REQUEST))


def select(names: list[str] | None) -> list[Figure]:
    if not names:
        return list(FIGURES)
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown figure {', '.join(unknown)} (known: {', '.join(NAMES)})")
    return [f for f in (*FIGURES, *ON_REQUEST) if f.name in names]
