"""When a job runs, how often, within what: a start's own fields, retries, limits.

A start request is a job type's config plus a few fields of its own, beside
``type``: ``runAt`` or ``delayS`` (it waits ``scheduled``), ``priority``,
``retry``, ``idempotencyKey``, ``limits``, ``after`` (it waits ``waiting`` for
another job) and ``approval`` (it waits ``awaiting_approval``): the names in
``workers.registry.RESERVED_FIELDS``, which no config may use. ``split``
reads and checks them (400 naming the field) and hands back the body
without them, which the job type's config decodes as before: the type never
sees them and its unknown-field check stays strict.

``next_attempt`` decides, where a failed run is settled (``runs.Run``) and
where a dead instance's job is rescued (``recovery``), whether the failure
is retried: then the job waits ``scheduled`` for its backoff, keeps its id,
and its error joins ``attemptErrors``.

``limits`` resolves what the job may use (``workers.limits``): the start's
values over its type's, refused above the server's caps.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Annotated, Any

import msgspec

from supervisor.errors import Invalid
from supervisor.job import AttemptError, Job, RetryPolicy
from supervisor.parsing import decode
from workers.limits import Limits
from workers.registry import RESERVED_FIELDS, JobType, Retry

# A runAt this far in the past still runs (at once): the client's clock may lag ours.
PAST_TOLERANCE_S = 60.0
MAX_AHEAD_S = 366 * 86400.0
PRIORITY_MIN, PRIORITY_MAX = -100, 100
MAX_BACKOFF_S = 86400.0
MAX_IDEMPOTENCY_KEY = 200


class RetryIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    max_attempts: Annotated[int, msgspec.Meta(ge=1)]
    backoff_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_BACKOFF_S)] | None = None


class AfterIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """``after``: run once ``job_id`` ends as ``when`` asks (a chain's step names no job)."""

    job_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = None
    when: str = "completed"
    # config field -> field of the parent's result, copied in when it is released
    result_to_config: dict[str, str] | None = None


WHEN = ("completed", "finished")


class StartOptions(msgspec.Struct, rename="camel"):
    """The start request's own fields (the config's are ignored here)."""

    run_at: datetime | None = None
    delay_s: Annotated[float, msgspec.Meta(ge=0, le=MAX_AHEAD_S)] | None = None
    priority: Annotated[int, msgspec.Meta(ge=PRIORITY_MIN, le=PRIORITY_MAX)] = 0
    retry: RetryIn | None = None
    idempotency_key: (
        Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)] | None
    ) = None
    after: AfterIn | None = None
    approval: bool = False
    limits: Limits | None = None


_fields = msgspec.json.Decoder(dict[str, msgspec.Raw])


def split(body: bytes) -> tuple[StartOptions, bytes]:
    """The start's own fields, checked, and the body the job type's config decodes."""
    options = decode(body, StartOptions)
    if options.run_at is not None and options.run_at.tzinfo is None:
        raise Invalid("runAt: needs a time zone (Z or +hh:mm)", "runAt")
    if options.run_at is not None and options.delay_s is not None:
        raise Invalid("delayS: give runAt or delayS, not both", "delayS")
    if options.after is not None:
        if options.after.when not in WHEN:
            raise Invalid("after.when: must be completed or finished", "after.when")
        if options.run_at is not None or options.delay_s is not None:
            raise Invalid("after: a job waits for its parent or its time, not both", "after")
    if options.approval and (options.run_at is not None or options.delay_s is not None):
        raise Invalid("approval: a job waits for its approval or its time, not both", "approval")
    if not any(name.encode() in body for name in RESERVED_FIELDS):
        return options, body
    fields = _fields.decode(body)
    for name in RESERVED_FIELDS:
        fields.pop(name, None)
    return options, msgspec.json.encode(fields)


def run_at(options: StartOptions, now: datetime) -> datetime | None:
    """When the job becomes claimable; None: at once. Invalid naming the field if out of bounds."""
    if options.delay_s is not None:
        at = now + timedelta(seconds=options.delay_s)
    elif options.run_at is not None:
        at = options.run_at
        if at < now - timedelta(seconds=PAST_TOLERANCE_S):
            raise Invalid(
                f"runAt: {at.isoformat()} is in the past (more than"
                f" {PAST_TOLERANCE_S:.0f} s before the server's time, {now.isoformat()})",
                "runAt",
            )
        if at > now + timedelta(seconds=MAX_AHEAD_S):
            raise Invalid(f"runAt: at most {MAX_AHEAD_S / 86400:.0f} days ahead", "runAt")
    else:
        return None
    return None if at <= now else _whole_ms(at)


def _whole_ms(at: datetime) -> datetime:
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


def policy(job_type: JobType, options: StartOptions, max_attempts: int) -> RetryPolicy | None:
    """The job's retry policy: the start's ``retry`` over its type's; None: one attempt."""
    declared = job_type.retry
    asked = options.retry
    if asked is None:
        return None if declared is None else _policy(declared)
    if asked.max_attempts > max_attempts:
        raise Invalid(
            f"retry.maxAttempts: at most {max_attempts} (JOBSUP_MAX_ATTEMPTS)",
            "retry.maxAttempts",
        )
    base = declared or Retry()
    backoff = base.backoff_s if asked.backoff_s is None else asked.backoff_s
    return _policy(base, max_attempts=asked.max_attempts, backoff_s=backoff)


def _policy(retry: Retry, **override: Any) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=override.get("max_attempts", retry.max_attempts),
        backoff_s=override.get("backoff_s", retry.backoff_s),
        jitter=retry.jitter,
        retry_on=tuple(retry.retry_on),
    )


# Each limit's name in a start request, and the variable that caps it.
LIMIT_CAPS = (
    ("timeout_s", "timeoutS", "JOBSUP_MAX_TIMEOUT_S"),
    ("cpu_s", "cpuS", "JOBSUP_MAX_CPU_S"),
    ("memory_mib", "memoryMiB", "JOBSUP_MAX_MEMORY_MIB"),
    ("open_files", "openFiles", "JOBSUP_MAX_OPEN_FILES"),
)


def limits(job_type: JobType, options: StartOptions, caps: Limits) -> Limits | None:
    """The job's limits: each one the start asks for over its type's; None: no limit at all.

    A value the start asks for above the server's cap is refused (400 naming
    the field); a type's default above it is lowered to the cap.
    """
    asked = options.limits
    for name, field, variable in LIMIT_CAPS:
        value, cap = getattr(asked, name, None), getattr(caps, name)
        if value is not None and cap is not None and value > cap:
            raise Invalid(f"limits.{field}: at most {cap:g} ({variable})", f"limits.{field}")
    chosen = (job_type.limits or Limits()).over(asked)
    capped = {
        name: min(value, cap)
        for name, *_ in LIMIT_CAPS
        if (value := getattr(chosen, name)) is not None and (cap := getattr(caps, name)) is not None
    }
    chosen = msgspec.structs.replace(chosen, **capped)
    return None if chosen.empty else chosen


def retryable(error: dict[str, Any] | None, retry: RetryPolicy) -> bool:
    if error is None:
        return False
    return error.get("reason") in retry.retry_on or error.get("type") in retry.retry_on


def next_attempt(job: Job, error: dict[str, Any], now: datetime) -> datetime | None:
    """Record the failed attempt on ``job``; when it runs again, or None if this failure is final.

    Every failed attempt of a job with a retry policy joins
    ``job.attempt_errors``, the final one too. A job someone asked to cancel
    is never retried.
    """
    if job.retry is None:
        return None
    job.attempt_errors = [
        *(job.attempt_errors or []),
        AttemptError(attempt=job.attempts, error=error, at=now),
    ]
    retry = job.retry
    if retry is None or job.cancel is not None or not retryable(error, retry):
        return None
    failed = len(job.attempt_errors)
    if failed >= retry.max_attempts:
        return None
    wait = min(retry.backoff_s * 2 ** (failed - 1), MAX_BACKOFF_S)
    wait *= 1 + random.uniform(-retry.jitter, retry.jitter)
    return _whole_ms(now + timedelta(seconds=max(0.0, wait)))
