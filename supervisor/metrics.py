"""Prometheus metrics: one registry per app, fed by the job event bus, the store and the API.

What is counted, and where from:

- jobs, from the event bus (``supervisor.events``, a ``listen`` callback on
  the loop): accepted by type; finished by type and final status; each
  finished job's duration (``startedAt`` to ``completedAt``), its start
  latency (``createdAt`` to ``startedAt``, observed when it starts) and, for a
  cancelled job, its cancel latency (the cancel's ``requestedAt`` to
  ``completedAt``), all from the job's own timestamps; children that crashed
  (died without reporting, ``error.reason == "crashed"``) by cause (the
  signal's name, or ``exit N``);
- each run's end, from the table (``JobTable.resource_listeners``, once the
  child is gone): CPU seconds and peak RSS by type, and endings by type and
  how it ended (``supervisor.forensics.Ending``);
- database writes, from the store's writer threads (``Store.on_write``):
  how long each took, and those that failed, by cause;
- notification attempts, from the sender (``supervisor.notify``), by outcome;
- HTTP requests, from the request middleware (``supervisor.api.observe``):
  by method, route template and status, and their duration by route;
- running, paused and pending jobs: gauges read when scraped (``scrape``), the
  pending count with one read on a database thread, never on the loop.

prometheus-client's metrics are thread-safe, so the store's threads observe
directly. Each app has its own ``CollectorRegistry``: several apps in one
process (tests) never share counts.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from supervisor.events import Event, Kind
from supervisor.forensics import Resources
from supervisor.job import Job
from supervisor.state import JobStatus

if TYPE_CHECKING:
    from supervisor.runtime import Runtime

log = logging.getLogger("jobsup.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
_PREFIX = "jobsup"
# Jobs last from milliseconds (a dry run) to hours (a large group's removal).
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, 21600)
# Start and cancel latencies: milliseconds when all is well, the grace
# periods (seconds) when a child ignores its cancel or waits for a slot.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DB_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# A run's CPU (user + system) and its peak resident memory.
CPU_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400)
RSS_BUCKETS = tuple(
    mib * 1024 * 1024 for mib in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((end - start).total_seconds(), 0.0)


def crash_cause(job: Job) -> str | None:
    """Why the job's child died without reporting (``SIGKILL``, ``exit 3``), or None."""
    error = job.error or {}
    if job.status is not JobStatus.FAILED or error.get("reason") != "crashed":
        return None
    if error.get("signal"):
        return str(error["signal"])
    if error.get("exitCode") is not None:
        return f"exit {error['exitCode']}"
    return "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter(
            f"{_PREFIX}_jobs_accepted", "Jobs accepted, by type", ["type"], registry=r
        )
        self.finished = Counter(
            f"{_PREFIX}_jobs_finished",
            "Jobs that reached a final state here, by type and status",
            ["type", "status"],
            registry=r,
        )
        self.running = Gauge(f"{_PREFIX}_jobs_running", "Jobs running in this instance", registry=r)
        self.pending = Gauge(
            f"{_PREFIX}_jobs_pending", "Jobs waiting for a slot, across instances", registry=r
        )
        self.paused = Gauge(
            f"{_PREFIX}_jobs_paused",
            "Jobs pausing or paused in this instance (counted in jobs_running: they hold a slot)",
            registry=r,
        )
        self.duration = Histogram(
            f"{_PREFIX}_job_duration_seconds",
            "From a job's startedAt to its completedAt, by type and final status",
            ["type", "status"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.start_latency = Histogram(
            f"{_PREFIX}_job_start_latency_seconds",
            "From a job's createdAt to its startedAt, by type",
            ["type"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cancel_latency = Histogram(
            f"{_PREFIX}_job_cancel_latency_seconds",
            "From a cancel's requestedAt to the job's completedAt, by type and stop mode",
            ["type", "mode"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.crashes = Counter(
            f"{_PREFIX}_child_crashes",
            "Job children that died without reporting how they ended, by cause",
            ["cause"],
            registry=r,
        )
        self.cpu = Histogram(
            f"{_PREFIX}_job_cpu_seconds",
            "CPU time (user + system) of each run's child and its reaped children, by type",
            ["type"],
            buckets=CPU_BUCKETS,
            registry=r,
        )
        self.peak_rss = Histogram(
            f"{_PREFIX}_job_peak_rss_bytes",
            "Peak resident memory of each run's child, by type",
            ["type"],
            buckets=RSS_BUCKETS,
            registry=r,
        )
        self.endings = Counter(
            f"{_PREFIX}_job_endings",
            "Runs that ended here, by type and how (exited, cooperative, terminated, killed,"
            " limit, crash)",
            ["type", "ended"],
            registry=r,
        )
        self.db_write = Histogram(
            f"{_PREFIX}_db_write_seconds",
            "Database writes (each with its retries), by outcome",
            ["outcome"],
            buckets=DB_BUCKETS,
            registry=r,
        )
        self.db_failures = Counter(
            f"{_PREFIX}_db_write_failures",
            "Database writes that failed, by cause (unavailable, error)",
            ["cause"],
            registry=r,
        )
        self.http = Counter(
            f"{_PREFIX}_http_requests",
            "HTTP requests, by method, route template and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            f"{_PREFIX}_http_request_seconds",
            "HTTP request durations, by route template",
            ["route"],
            buckets=HTTP_BUCKETS,
            registry=r,
        )
        self.notifications = Counter(
            f"{_PREFIX}_notification_attempts",
            "Notification attempts, by outcome (delivered, retried, failed: the last one)",
            ["outcome"],
            registry=r,
        )
        self._runtime: Runtime | None = None

    # -- wiring ------------------------------------------------------------------

    def attach(self, runtime: Runtime) -> None:
        """Start counting a started runtime's jobs and database writes."""
        self._runtime = runtime
        runtime.events.listen(self.on_event)
        runtime.table.resource_listeners.append(self.on_resources)
        runtime.store.on_write = self.on_write
        if runtime.sender is not None:
            runtime.sender.on_outcome = self.on_notification

    def detach(self) -> None:
        if self._runtime is not None:
            self._runtime.events.unlisten(self.on_event)
            self._runtime.table.resource_listeners.remove(self.on_resources)
            self._runtime.store.on_write = None
            self._runtime = None

    # -- observations ------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """A job event (on the loop): count it, from the job's own timestamps."""
        if event.kind is Kind.CREATED:
            self.accepted.labels(event.job_type).inc()
            return
        if event.kind is Kind.FINISHED:
            self.finished.labels(event.job_type, event.status.value).inc()
        elif event.kind is not Kind.STARTED:
            return
        # The times are the job's own; a pending job cancelled in the store
        # (never in this instance's memory) has none worth observing.
        job = self._runtime.table.get(event.job_id) if self._runtime is not None else None
        if job is None:
            return
        if event.kind is Kind.STARTED:
            latency = _seconds(job.created_at, job.started_at)
            if latency is not None:
                self.start_latency.labels(job.type).observe(latency)
            return
        duration = _seconds(job.started_at, job.completed_at)
        if duration is not None:
            self.duration.labels(job.type, job.status.value).observe(duration)
        if job.status is JobStatus.CANCELLED and job.cancel is not None:
            latency = _seconds(job.cancel.requested_at, job.completed_at)
            if latency is not None:
                mode = job.cancel.mode or "before_start"
                self.cancel_latency.labels(job.type, mode).observe(latency)
        cause = crash_cause(job)
        if cause is not None:
            self.crashes.labels(cause).inc()

    def on_resources(self, job_type: str, resources: Resources) -> None:
        """A run's child is gone (on the loop): what it used, and how it ended."""
        self.endings.labels(job_type, resources.ended.value).inc()
        if resources.user_cpu_s is not None and resources.system_cpu_s is not None:
            self.cpu.labels(job_type).observe(resources.user_cpu_s + resources.system_cpu_s)
        if resources.peak_rss_kib is not None:
            self.peak_rss.labels(job_type).observe(resources.peak_rss_kib * 1024)

    def on_write(self, seconds: float, failure: str | None) -> None:
        """A database write ended (on a database thread); ``failure`` is its cause, if any."""
        self.db_write.labels("ok" if failure is None else "failed").observe(seconds)
        if failure is not None:
            self.db_failures.labels(failure).inc()

    def on_notification(self, outcome: str) -> None:
        self.notifications.labels(outcome).inc()

    def on_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http.labels(method, route, str(status)).inc()
        self.http_seconds.labels(route).observe(seconds)

    # -- scraping ----------------------------------------------------------------

    async def scrape(self) -> bytes:
        """The text exposition, with the gauges read now."""
        runtime = self._runtime
        if runtime is not None:
            self.running.set(runtime.scheduler.running())
            self.paused.set(runtime.scheduler.paused())
            self.pending.set(await runtime.store.call(_count_pending))
        return generate_latest(self.registry)


def _count_pending(db: Any) -> int:
    row = db.one("SELECT count(*) FROM jobs WHERE status = 'pending'")
    return int(row[0]) if row else 0
