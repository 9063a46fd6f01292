"""A jobs row as the store reads it: the columns in order, and the Job they make.

Below every other module of the store: the jobs table's writes
(``store.jobs``) and the held jobs' moves (``store.chains``) both read rows
through it.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import msgspec

from supervisor.forensics import Resources
from supervisor.job import (
    After,
    Approval,
    AttemptError,
    CancelInfo,
    Job,
    Progress,
    RequestedBy,
    RetryPolicy,
)
from supervisor.state import JobStatus
from workers.limits import Limits

# Stored times: whole milliseconds, one rounding everywhere (workers.times).
from workers.times import opt_from_ms as from_ms

COLUMNS = (
    "id, type, status, config, progress, result, error, cancel, pid,"
    " created_at, started_at, completed_at, owner, attempts, saved_at, resumes, rerun_of,"
    " run_at, priority, retry, attempt_errors, idempotency_key, requested_by,"
    " after_job_id, after_when, after_pass, chain_id, chain_index, approval_required,"
    " approved_by, approved_at, rejected_by, rejected_at, expires_at, paused_at,"
    " limits, leftovers_killed, resources"
)

_json = msgspec.json.Encoder()
_cancel_decoder = msgspec.json.Decoder(CancelInfo)
_progress_decoder = msgspec.json.Decoder(Progress)
_retry_decoder = msgspec.json.Decoder(RetryPolicy)
_attempts_decoder = msgspec.json.Decoder(list[AttemptError])
_requested_by_decoder = msgspec.json.Decoder(RequestedBy)
_pass_decoder = msgspec.json.Decoder(dict[str, str])
_limits_decoder = msgspec.json.Decoder(Limits)
_resources_decoder = msgspec.json.Decoder(Resources)


def to_json(value: Any) -> str | None:
    """A JSON column's text; None stays NULL."""
    return None if value is None else _json.encode(value).decode()


def row_to_job(row: tuple[Any, ...]) -> Job:
    (
        id_,
        type_,
        status,
        config,
        progress,
        result,
        error,
        cancel,
        pid,
        created,
        started,
        completed,
        owner,
        attempts,
        saved_at,
        resumes,
        rerun_of,
        run_at,
        priority,
        retry,
        attempt_errors,
        idempotency_key,
        requested_by,
        after_job_id,
        after_when,
        after_pass,
        chain_id,
        chain_index,
        approval_required,
        approved_by,
        approved_at,
        rejected_by,
        rejected_at,
        expires_at,
        paused_at,
        limits,
        leftovers_killed,
        resources,
    ) = row
    return Job(
        id=id_,
        type=sys.intern(type_),  # a few job types, shared by every job in memory
        status=JobStatus(status),
        config=msgspec.Raw(config.encode()),
        progress=_progress_decoder.decode(progress),
        created_at=from_ms(created),  # type: ignore[arg-type]
        result=None if result is None else msgspec.json.decode(result),
        error=None if error is None else msgspec.json.decode(error),
        cancel=None if cancel is None else _cancel_decoder.decode(cancel),
        pid=pid,
        started_at=from_ms(started),
        completed_at=from_ms(completed),
        owner=owner,
        attempts=attempts,
        saved_at=from_ms(saved_at),
        resumes=resumes,
        rerun_of=rerun_of,
        run_at=from_ms(run_at),
        priority=priority,
        retry=None if retry is None else _retry_decoder.decode(retry),
        attempt_errors=None if attempt_errors is None else _attempts_decoder.decode(attempt_errors),
        idempotency_key=idempotency_key,
        requested_by=_by(requested_by),
        after=None
        if after_job_id is None
        else After(
            after_job_id,
            after_when,
            None if after_pass is None else _pass_decoder.decode(after_pass),
        ),
        chain_id=chain_id,
        chain_index=chain_index,
        approval=Approval(
            expires_at=from_ms(expires_at),
            approved_by=_by(approved_by),
            approved_at=from_ms(approved_at),
            rejected_by=_by(rejected_by),
            rejected_at=from_ms(rejected_at),
        )
        if approval_required
        else None,
        paused_at=from_ms(paused_at),
        limits=None if limits is None else _limits_decoder.decode(limits),
        leftovers_killed=leftovers_killed,
        resources=None if resources is None else _resources_decoder.decode(resources),
    )


def _by(text: str | None) -> RequestedBy | None:
    return None if text is None else _requested_by(text)


# A few callers start most jobs: each job in memory shares its caller's one
# (frozen) value rather than holding a copy of the same three strings.
@functools.lru_cache(maxsize=256)
def _requested_by(text: str) -> RequestedBy:
    return _requested_by_decoder.decode(text)


class KeyTaken(Exception):
    """A live job (``holder``, when known) already holds the exclusive key."""

    def __init__(self, key: str, holder: str | None) -> None:
        super().__init__(key)
        self.key = key
        self.holder = holder
