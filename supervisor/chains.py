"""Chains of jobs and approval steps, as the API sees them: start, show, cancel, approve.

A chain is an ordered list of start requests, inserted in one transaction:
each step after the first waits (``waiting``) for the step before it, each
carries the ``chainId``. An approval step waits (``awaiting_approval``) for
``approve`` or ``reject``. The moves themselves are the store's
(``supervisor.store.chains``): this module checks the requests, maps the
store's refusals to domain errors, and wakes the scheduler.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import msgspec

from supervisor.audit import entry
from supervisor.credentials import Caller
from supervisor.errors import Conflict, Invalid, JobsupError, NotFound, QueueFull
from supervisor.events import Kind
from supervisor.job import Job, new_job_id
from supervisor.service import JobService, Prepared
from supervisor.state import TERMINAL, JobStatus
from supervisor.store import chains as chain_sql
from supervisor.store import claims
from supervisor.store import jobs as sql
from workers.times import now_ms

MAX_STEPS = 100


class ChainIn(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /admin/chains``: the start requests, in the order they run."""

    steps: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_STEPS)]


class ChainView(msgspec.Struct, rename="camel"):
    chain_id: str
    status: str  # "running" while a step is not finished, else the last step's state
    steps: list[Any]  # each step's job, without its result


class Chains:
    def __init__(self, jobs: JobService) -> None:
        self.jobs = jobs

    async def start(self, chain: ChainIn, caller: Caller | None = None) -> list[Job]:
        """Check every step, then insert them all linked, or none."""
        if not 1 <= len(chain.steps) <= MAX_STEPS:
            raise Invalid(f"steps: 1 to {MAX_STEPS} start requests", "steps")
        chain_id = new_job_id()
        prepared: list[Prepared] = []
        for index, body in enumerate(chain.steps):
            parent = prepared[-1].job.id if prepared else None
            try:
                step = await self.jobs.prepare(bytes(body), caller=caller, chain_parent=parent)
            except JobsupError as exc:
                field = f"steps[{index}]" + ("" if exc.field is None else f".{exc.field}")
                joint = ": " if exc.field is None else "."  # "steps[1]: Expected `object`"
                exc.message, exc.field = f"steps[{index}]{joint}{exc.message}", field
                raise
            step.job.chain_id, step.job.chain_index = chain_id, index
            prepared.append(step)
        peer = None if caller is None else caller.peer
        rows = [
            (
                p.job,
                p.key,
                p.label,
                p.rank,
                None if caller is None else entry(caller, peer, "chain.start", p.job.id, 202),
            )
            for p in prepared
        ]
        await self._insert(rows)
        for p in prepared:
            self.jobs.table.events.publish(Kind.CREATED, p.job)
        await self._wake()
        return [p.job for p in prepared]

    async def _insert(self, rows: list[Any]) -> None:
        settings = self.jobs.settings
        try:
            await self.jobs.table.store.call(
                sql.insert_chain,
                rows,
                now_ms(),
                settings.max_pending_jobs,
                int(settings.idempotency_ttl_s * 1000),
                self.jobs.table.notices.notice_of,
                write=True,
                retry_for=5.0,
            )
        except sql.KeyTaken as exc:
            raise Conflict(f"another job is already pending or running for {exc.key}") from None
        except sql.IdempotentReplay as exc:
            raise Conflict(f"a step's idempotencyKey names job {exc.job_id}") from None
        except sql.QueueFull:
            raise QueueFull("too many pending jobs; retry later") from None
        except sql.UnknownParent as exc:
            message = f"steps[0].after.jobId: no job {exc.args[0]!r}"
            raise Invalid(message, "steps[0].after.jobId") from None

    async def _wake(self) -> None:
        self.jobs.scheduler.wake()
        if self.jobs.table.store.dialect == "postgresql":
            await self.jobs.table.store.call(claims.notify_pending, write=True)

    async def get(self, chain_id: str) -> ChainView:
        steps = await self.jobs.table.store.call(chain_sql.chain_jobs, chain_id)
        if not steps:
            raise NotFound(f"no chain {chain_id!r}", "chainId")
        live = [s for s in steps if s.status not in TERMINAL]
        status = "running" if live else steps[-1].status.value
        return ChainView(chain_id, status, steps)

    async def cancel(self, chain_id: str, caller: Caller | None = None) -> ChainView:
        """Cancel every step not yet finished, the last first (so each says it was cancelled)."""
        view = await self.get(chain_id)
        for step in reversed(view.steps):
            if step.status not in TERMINAL:
                with contextlib.suppress(JobsupError):  # it ended meanwhile
                    await self.jobs.cancel(step.id, "chain", caller)
        return await self.get(chain_id)

    async def approve(self, job_id: str, caller: Caller | None = None) -> Job:
        by = None if caller is None else caller.who()
        try:
            await self.jobs.table.store.call(chain_sql.approve, job_id, by, now_ms(), write=True)
        except chain_sql.NotAwaiting as exc:
            raise _not_awaiting(job_id, exc.status) from None
        except sql.KeyTaken as exc:
            raise Conflict(
                f"another job is pending or running for {exc.key}; approve once it has ended"
            ) from None
        await self._wake()
        job = await self.jobs.get(job_id)
        self.jobs.table.events.publish(Kind.APPROVED, job)
        return job

    async def reject(self, job_id: str, caller: Caller | None = None) -> Job:
        by = None if caller is None else caller.who()
        try:
            await self.jobs.table.store.call(
                chain_sql.reject,
                job_id,
                by,
                now_ms(),
                self.jobs.table.notices.notice_of,
                write=True,
            )
        except chain_sql.NotAwaiting as exc:
            raise _not_awaiting(job_id, exc.status) from None
        job = await self.jobs.get(job_id)
        self.jobs.table.events.publish(Kind.FINISHED, job)
        self.jobs.table.announce_released(job_id)
        return job


def _not_awaiting(job_id: str, status: JobStatus | None) -> JobsupError:
    if status is None:
        return NotFound(f"no job {job_id!r}", "jobId")
    return Conflict(f"job {job_id} is {status}, not awaiting approval")
