"""The job record, as kept in the table, written to the store and served."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

import msgspec

from supervisor.forensics import Resources
from supervisor.state import JobStatus
from workers.limits import Limits
from workers.times import from_ms, now_ms


def now() -> datetime:
    """The time as the store keeps it (whole milliseconds), so that a job read
    from memory and the same job read from the store show the same times."""
    return from_ms(now_ms())


_last_id_ms = 0
_id_seq = 0


def new_job_id() -> str:
    """Opaque to clients; time-ordered, so ids sort like creation times.

    Within one millisecond a per-process sequence keeps the order in which
    jobs were submitted (the claim order breaks ties on the id).
    """
    global _last_id_ms, _id_seq
    ms = now_ms()
    if ms <= _last_id_ms:
        ms, _id_seq = _last_id_ms, _id_seq + 1
    else:
        _id_seq = 0
    _last_id_ms = ms
    return f"{ms:012x}{_id_seq:04x}{secrets.token_hex(4)}"


# gc=False: jobs hold no reference cycles, so the collector need not track
# (or keep a header for) each of the thousands kept in memory.
class Progress(msgspec.Struct, rename="camel", gc=False):
    processed: int = 0
    total: int | None = None
    message: str | None = None
    phase: str | None = None


class RequestedBy(msgspec.Struct, frozen=True, gc=False):
    """Who asked: a token's name, its role and its fingerprint (never the token)."""

    name: str
    role: str
    fingerprint: str


class CancelInfo(msgspec.Struct, rename="camel"):
    requested_at: datetime
    reason: str  # "user" or "shutdown"
    mode: str | None = None  # CancelMode, once the job has stopped
    exited_at: datetime | None = None
    requested_by: RequestedBy | None = None  # None for the server's own (shutdown)


class RetryPolicy(msgspec.Struct, rename="camel", gc=False):
    """How often a job runs before a failure is final, and how long it waits between runs.

    Resolved when the job is accepted (the start's ``retry`` over its type's
    ``Retry``) and stored with it, so that whichever instance settles a
    failed attempt decides alike.
    """

    max_attempts: int = 1
    backoff_s: float = 0.0
    jitter: float = 0.0  # each wait is the backoff times 1 ± up to this fraction
    # What a failure must be to be retried: its error's ``reason`` (crashed,
    # interrupted) or ``type`` (an exception class's name).
    retry_on: tuple[str, ...] = ()


class AttemptError(msgspec.Struct, rename="camel", gc=False):
    """One failed attempt of a job: which claim it was, its error, and when it failed."""

    attempt: int
    error: dict[str, Any]
    at: datetime


class After(msgspec.Struct, rename="camel", omit_defaults=True, gc=False):
    """What a chained job waits for: ``job_id`` ending as ``when`` asks.

    ``when``: "completed" (only a completed parent releases it; any other
    end cancels it, reason ``dependency``) or "finished" (any end does).
    ``result_to_config``: config field -> field of the parent's result,
    copied into this job's config when the parent's end releases it.
    """

    job_id: str
    when: str = "completed"
    result_to_config: dict[str, str] | None = None


class Approval(msgspec.Struct, rename="camel", omit_defaults=True, gc=False):
    """An approval step: who approved or rejected it and when; unanswered, when it expires."""

    required: bool = True
    expires_at: datetime | None = None
    approved_by: RequestedBy | None = None
    approved_at: datetime | None = None
    rejected_by: RequestedBy | None = None
    rejected_at: datetime | None = None


class Job(msgspec.Struct, rename="camel", gc=False):
    id: str
    type: str
    status: JobStatus
    config: msgspec.Raw  # the job's config as JSON, as it was accepted
    progress: Progress
    created_at: datetime
    result: Any = None
    error: dict[str, Any] | None = None
    cancel: CancelInfo | None = None
    pid: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    owner: str | None = None  # the instance running it
    attempts: int = 0
    requested_by: RequestedBy | None = None
    # A resumable job: when it last saved its place, and how many runs resumed from one.
    saved_at: datetime | None = None
    resumes: int = 0
    rerun_of: str | None = None  # the job this one repeats (POST …/rerun)
    # When a scheduled job becomes claimable (runAt, delayS, a retry's backoff).
    run_at: datetime | None = None
    priority: int = 0  # higher first; waiting raises it (the claim's aging)
    retry: RetryPolicy | None = None
    attempt_errors: list[AttemptError] | None = None  # each failed attempt, oldest first
    idempotency_key: str | None = None
    after: After | None = None  # a chained job: what it waits for (status waiting)
    chain_id: str | None = None  # the chain it is a step of (POST /admin/chains)
    chain_index: int | None = None  # its place in the chain, from 0
    approval: Approval | None = None  # an approval step (status awaiting_approval)
    paused_at: datetime | None = None  # when it last paused; None unless pausing or paused
    limits: Limits | None = None  # what it may use (workers.limits); None: no limit
    # Descendants still alive at its end, killed then (setsid escapees included).
    leftovers_killed: int | None = None
    # How its last run ended and what it used (supervisor.forensics); set once
    # that run's child is gone, moments after the final state.
    resources: Resources | None = None


# A job without its result, as lists show it unless asked (results can be
# megabytes: one per member of a large group).
JobSummary = msgspec.defstruct(
    "JobSummary",
    [(f.name, f.type) for f in msgspec.structs.fields(Job) if f.name != "result"],
    rename="camel",
    gc=False,
)
_SUMMARY_FIELDS = JobSummary.__struct_fields__


def summary(job: Job) -> Any:
    return JobSummary(*(getattr(job, name) for name in _SUMMARY_FIELDS))
