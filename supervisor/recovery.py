"""What becomes of the live jobs of an instance that died (crash, SIGKILL, lost host).

Its pending jobs go back to the queue for any instance. Jobs that were
running lost their child with the process that supervised it: an idempotent
or resumable type is re-queued (a resumable one keeps its saved place, which
its next run resumes from; a paused resumable one waits ``paused``, unclaimed,
until it is resumed), any other fails with reason ``interrupted`` (or,
if its retry policy retries that, waits ``scheduled`` for its next attempt); a job that
was being cancelled ends ``cancelled``. What they had done (partial result,
the job type's own records) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from supervisor import timing
from supervisor.job import CancelInfo, Job, now
from supervisor.state import CancelMode, JobStatus, check_transition, job_error
from workers import registry


@dataclass(frozen=True, slots=True)
class Decision:
    status: JobStatus
    changes: dict[str, Any]


def decide(job: Job, previous_owner: str | None) -> Decision:
    """The recovery move for one live job of a dead instance."""
    if job.status in (JobStatus.PENDING, JobStatus.SCHEDULED):  # never began: it waits on
        return Decision(job.status, {"owner": None})
    where = f" (instance {previous_owner})" if previous_owner else ""
    if job.status is JobStatus.CANCELLING:
        cancel = job.cancel or CancelInfo(requested_at=now(), reason="user")
        return Decision(
            JobStatus.CANCELLED,
            {
                "cancel": msgspec.structs.replace(
                    cancel, mode=CancelMode.INTERRUPTED.value, exited_at=now()
                ),
                "completed_at": now(),
                "pid": None,
            },
        )
    try:
        job_type = registry.get(job.type)
        again = job_type.idempotent or job_type.resumable
    except KeyError:
        again = False
    if again and job.status in (JobStatus.PAUSING, JobStatus.PAUSED) and job_type.resumable:
        # Paused, it comes back paused: unclaimed until someone resumes it.
        paused = {"pid": None, "started_at": None, "owner": None}
        return Decision(JobStatus.PAUSED, {**paused, "paused_at": job.paused_at or now()})
    if again:
        return Decision(JobStatus.PENDING, {"pid": None, "started_at": None, "owner": None})
    error = job_error(
        "interrupted", "Interrupted", f"the supervisor{where} stopped while the job ran"
    )
    failed = msgspec.structs.replace(job)
    again = timing.next_attempt(failed, error, now())
    if again is not None:  # its retry policy runs it again, on any instance
        retry = {"error": error, "attempt_errors": failed.attempt_errors, "run_at": again}
        return Decision(
            JobStatus.SCHEDULED, {**retry, "pid": None, "started_at": None, "owner": None}
        )
    changes = {"error": error, "completed_at": now(), "pid": None}
    return Decision(JobStatus.FAILED, {**changes, "attempt_errors": failed.attempt_errors})


def rescued(job: Job) -> Job:
    """The job as it should be written after its instance died.

    The move is checked against TRANSITIONS like every other (a pending job
    handed back stays pending); ``claims.rescue_job``'s guard on the stored
    status is its storage-side twin.
    """
    decision = decide(job, job.owner)
    if decision.status is not job.status:
        check_transition(job.status, decision.status)
    return msgspec.structs.replace(job, status=decision.status, **decision.changes)
