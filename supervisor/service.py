"""The job domain as the API sees it: submit, cancel, read, list.

Validation happens here, before anything is written: the body decodes into
the job type's config (naming the bad field), the type's own check runs
against the database (unknown group -> 404), and only then is the job
inserted, so a rejected request leaves no record behind.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from supervisor import timing
from supervisor.audit import entry
from supervisor.credentials import Caller
from supervisor.errors import (
    Conflict,
    Invalid,
    NotCancellable,
    NotFound,
    NotPaused,
    NotRunning,
    QueueFull,
    Rejected,
    ShuttingDown,
    Unavailable,
)
from supervisor.job import After, Approval, Job, Progress, new_job_id, now
from supervisor.logs import about_job
from supervisor.parsing import decode
from supervisor.scheduler import Scheduler
from supervisor.settings import Settings
from supervisor.state import HELD, TERMINAL, JobStatus
from supervisor.store import claims, job_logs
from supervisor.store import jobs as sql
from supervisor.table import JobTable
from workers import registry
from workers.db import Database, DatabaseUnavailable
from workers.limits import Limits
from workers.registry import ConfigRejected, JobType, Policy
from workers.times import from_ms, now_ms

log = logging.getLogger("jobsup.service")

# How often a cancel made here looks for the owning instance's answer.
REMOTE_POLL_S = 0.05
# No instance holds these: a cancel writes their end in the store.
UNCLAIMED = frozenset({JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.PAUSED, *HELD})


def _after(
    given: timing.AfterIn | None, chain_parent: str | None, job_type: JobType, config: Any
) -> After | None:
    """What the job waits for: its ``after``, or in a chain the step before it."""
    if given is not None and given.result_to_config:
        _check_passed_fields(given.result_to_config, job_type, config)
    if chain_parent is not None:
        if given is not None and given.job_id is not None:
            raise Invalid(
                "after.jobId: a chain's step runs after the step before it", "after.jobId"
            )
        if given is None:
            return After(chain_parent)
        return After(chain_parent, given.when, given.result_to_config)
    if given is None:
        return None
    if given.job_id is None:
        raise Invalid("after.jobId: required", "after.jobId")
    return After(given.job_id, given.when, given.result_to_config)


def _check_passed_fields(fields: dict[str, str], job_type: JobType, config: Any) -> None:
    """``resultToConfig`` may fill only the type's own config fields, never ``type``,
    and never one its exclusive key is made of.

    The parent's result is copied in after every check ran: a name outside
    the config (or ``type`` itself) would make a job whose config its type
    cannot read, or one of another type than the one checked; a field of
    the key would let the job run holding the key it was started with (one
    group's) while it works on another group, beside that group's own job.
    """
    attrs = {f.encode_name: f.name for f in msgspec.structs.fields(job_type.config)}
    attrs.pop("type", None)
    for name in fields:
        if name not in attrs:
            raise Invalid(
                f"after.resultToConfig: {name!r} is not a config field of {job_type.name}",
                "after.resultToConfig",
            )
        if _feeds_key(job_type, config, attrs[name]):
            raise Invalid(
                f"after.resultToConfig: {name!r} is part of {job_type.name}'s exclusive key;"
                " it must be given in the start request itself",
                "after.resultToConfig",
            )


_PROBE = object()  # a value no config holds: a key made with it differs if it reads the field


def _feeds_key(job_type: JobType, config: Any, attr: str) -> bool:
    """Whether the type's exclusive key changes with the field (asked with a probe value)."""
    if job_type.exclusive_key is None:
        return False
    try:
        probed = job_type.exclusive_key(msgspec.structs.replace(config, **{attr: _PROBE}))
    except Exception:
        return True  # it reads the field as only a real value can be read
    return bool(probed != job_type.exclusive_key(config))


def _paused_or_pausing(job: Job) -> Job:
    """The job a pause answers with; one that ended (or began cancelling) first was not paused."""
    if job.status in (JobStatus.PAUSED, JobStatus.PAUSING, JobStatus.RUNNING):
        return job
    raise NotRunning(f"job {job.id} is {job.status}: it ended before it could pause")


def _resumed(job: Job) -> Job:
    """The job a resume answers with; one a cancel overtook (or that ended) was not resumed."""
    if job.status in (JobStatus.RUNNING, JobStatus.PENDING, JobStatus.PAUSED):
        return job
    raise NotPaused(f"job {job.id} is {job.status}: it was not resumed")


class _TypeOnly(msgspec.Struct):
    type: str


class Prepared(msgspec.Struct):
    """A checked start, not yet inserted: its job, decoded config, exclusive key, label, rank."""

    job: Job
    config: Any
    key: str | None
    label: str | None
    rank: int


class Started(msgspec.Struct):
    """What a start made: the job, and whether an earlier start with its idempotency key did."""

    job: Job
    replayed: bool = False


class JobTypeView(msgspec.Struct, rename="camel"):
    """A job type as clients see it: enough to build a form for its config."""

    name: str
    description: str | None
    config_schema: dict[str, Any]
    limits: Limits | None = None  # its jobs' defaults (a start may set others, up to the caps)


def describe(job_type: JobType) -> JobTypeView:
    doc = inspect.getdoc(job_type.run) or job_type.config.__doc__
    schema = msgspec.json.schema(job_type.config)
    return JobTypeView(
        job_type.name, inspect.cleandoc(doc) if doc else None, schema, job_type.limits
    )


def _run_check(db: Database, job_type: JobType, config: Any, policy: Policy) -> None:
    assert job_type.check is not None
    job_type.check(config, db, policy)


def _freezable(type_name: str) -> bool:
    try:
        return registry.get(type_name).freezable
    except KeyError:
        return False


def _label(job_type: JobType, config: Any) -> str | None:
    if job_type.label is None:
        return None
    value = job_type.label.value(config)
    return None if value is None else sql.label_of(job_type.label.name, value)


class JobService:
    def __init__(self, table: JobTable, scheduler: Scheduler, settings: Settings) -> None:
        self.table = table
        self.scheduler = scheduler
        self.settings = settings
        self.policy = settings.policy()

    def _job_type(self, body: bytes) -> JobType:
        name = decode(body, _TypeOnly).type
        try:
            return registry.get(name)
        except KeyError:
            known = ", ".join(registry.names())
            raise Invalid(f"type: unknown job type {name!r} (known: {known})", "type") from None

    def types(self) -> list[JobTypeView]:
        return [describe(registry.get(name)) for name in registry.names()]

    @staticmethod
    def new_job(job_type: JobType, config: Any) -> tuple[Job, str | None, str | None]:
        """A pending job for a config ``validate`` returned, with its exclusive key and label."""
        job = Job(
            id=new_job_id(),
            type=job_type.name,
            status=JobStatus.PENDING,
            config=msgspec.Raw(msgspec.json.encode(config)),
            progress=Progress(),
            created_at=now(),
        )
        key = job_type.exclusive_key(config) if job_type.exclusive_key else None
        return job, key, _label(job_type, config)

    async def rerun(self, job_id: str, caller: Caller | None = None) -> Job:
        """A new job with the original's config, checked again as a new start is."""
        original = await self.get(job_id)
        fields = msgspec.json.decode(bytes(original.config))
        if original.limits is not None:  # its limits, as if the start had asked for them
            fields["limits"] = original.limits
        if original.approval is not None:  # an approval step's copy waits for its own
            fields["approval"] = True
        return await self.submit(msgspec.json.encode(fields), caller, rerun_of=original.id)

    async def delete(self, job_id: str) -> JobStatus:
        """Delete a finished job, whichever instance ran it; a live one is refused."""
        deleted, status = await self.table.store.call(sql.delete_finished, job_id, write=True)
        if status is None:
            raise NotFound(f"no job {job_id!r}", "jobId")
        if not deleted:
            raise Conflict(f"job {job_id} is {status}: only a finished job can be deleted")
        self.table.forget(job_id)
        return status

    async def submit(
        self, body: bytes, caller: Caller | None = None, rerun_of: str | None = None
    ) -> Job:
        """Accept a start request (``start``), and return its job."""
        return (await self.start(body, caller, rerun_of)).job

    async def validate(self, body: bytes) -> tuple[JobType, Any]:
        """A start request's type and config, checked as ``start`` checks them; nothing written.

        For requests kept to start later (a schedule's job). The start's own
        fields (``supervisor.timing``) are checked too, and left out of the config.
        """
        prepared = await self.prepare(body)
        return registry.get(prepared.job.type), prepared.config

    async def prepare(
        self,
        body: bytes,
        rerun_of: str | None = None,
        caller: Caller | None = None,
        chain_parent: str | None = None,
    ) -> Prepared:
        """Everything a start does before its insert: the checks, and the job to insert.

        For a caller that inserts the job itself (a schedule's tick): the
        job is pending or scheduled, with its priority, retry policy and
        idempotency key, and ``rank`` is its place in the claim order.
        """
        job_type = self._job_type(body)
        options, body = timing.split(body)
        if chain_parent is not None:
            for name, given in (("runAt", options.run_at), ("delayS", options.delay_s)):
                if given is not None:
                    raise Invalid(
                        f"{name}: a chain's step runs after the step before it, not at a time",
                        name,
                    )
        created = now()
        run_at = timing.run_at(options, created)
        retry = timing.policy(job_type, options, self.settings.max_attempts)
        config = decode(body, job_type.config)
        if job_type.check is not None:
            try:
                await self.table.store.call(_run_check, job_type, config, self.policy, slow=True)
            except ConfigRejected as exc:
                if exc.status == 503:  # the type's check could not reach what it needs
                    raise Unavailable(exc.message) from None
                raise Rejected(exc.message, exc.field, exc.status) from None
        after = _after(options.after, chain_parent, job_type, config)
        approval = None
        if options.approval:
            ttl_ms = int(self.settings.plan_ttl_s * 1000)
            approval = Approval(expires_at=from_ms(now_ms() + ttl_ms))
        status = JobStatus.PENDING if run_at is None else JobStatus.SCHEDULED
        if approval is not None:
            status = JobStatus.AWAITING_APPROVAL
        if after is not None:
            status = JobStatus.WAITING
        job = Job(
            id=new_job_id(),
            type=job_type.name,
            status=status,
            config=msgspec.Raw(msgspec.json.encode(config)),
            progress=Progress(),
            created_at=created,
            rerun_of=rerun_of,
            run_at=run_at,
            priority=options.priority,
            retry=retry,
            idempotency_key=options.idempotency_key,
            limits=timing.limits(job_type, options, self.settings.limit_caps()),
            requested_by=None if caller is None else caller.who(),
            after=after,
            approval=approval,
        )
        key = job_type.exclusive_key(config) if job_type.exclusive_key else None
        rank = sql.queue_rank(job, self.scheduler.aging_ms)
        return Prepared(job, config, key, _label(job_type, config), rank)

    async def start(
        self, body: bytes, caller: Caller | None = None, rerun_of: str | None = None
    ) -> Started:
        """Accept a start request: a new job, or the one its idempotency key already names.

        The request's own fields (``supervisor.timing``) are checked first and
        taken out; the rest is the job type's config. With ``caller``, it is
        the job's ``requestedBy`` and the start's audit entry (``job.start``,
        or ``job.rerun``) is written in the insert's transaction.
        """
        prepared = await self.prepare(body, rerun_of, caller)
        if not self.scheduler.accepting:
            raise ShuttingDown("the server is shutting down; retry elsewhere")
        if not self.table.store.available:
            raise DatabaseUnavailable("the database is not taking writes")
        job, key, label = prepared.job, prepared.key, prepared.label
        action = "job.start" if rerun_of is None else "job.rerun"
        audit = None if caller is None else entry(caller, caller.peer, action, job.id, 202)
        run_at = job.run_at
        held = job.status in HELD
        slot = self.scheduler.reserve_slot() if run_at is None and not held else False
        try:
            claimed = await self.table.add(
                job,
                key,
                label,
                self.settings.max_pending_jobs,
                self.settings.instance_id if slot else None,
                rank=prepared.rank,
                idempotency_ttl_ms=int(self.settings.idempotency_ttl_s * 1000),
                audit=audit,
            )
        except sql.IdempotentReplay as exc:
            return Started(await self.get(exc.job_id), replayed=True)
        except sql.KeyTaken as exc:
            holder = f" ({exc.holder})" if exc.holder else ""
            raise Conflict(
                f"another job{holder} is already pending or running for {exc.key}; "
                "cancel it or wait for it to finish",
            ) from None
        except sql.QueueFull:
            raise QueueFull("too many pending jobs; retry later") from None
        except sql.UnknownParent as exc:
            raise Invalid(f"after.jobId: no job {exc.args[0]!r}", "after.jobId") from None
        finally:
            self.scheduler.release_slot(slot)
        log.info("job %s accepted (%s)", job.id, job.type, extra=about_job(job.id))
        if held:
            if job.after is not None:
                self.table.follow(job.after.job_id)
            self.scheduler.wake()  # its parent may have ended already: released at once
        elif claimed:
            self.scheduler.run_claimed(job)
        elif run_at is not None:
            self.scheduler.wake_at(run_at)
        else:
            self.scheduler.wake()
            if self.table.store.dialect == "postgresql":
                await self.table.store.call(claims.notify_pending, write=True)
        return Started(job)

    async def get(self, job_id: str) -> Job:
        job = await self.table.fetch(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}", "jobId")
        return job

    async def logs(self, job_id: str, after: int, limit: int) -> job_logs.LogPage:
        """A page of the job's captured output, from the store (any instance's job).

        The instance running it writes its lines about once a second.
        """
        if not await self.table.store.call(sql.job_exists, job_id):
            raise NotFound(f"no job {job_id!r}", "jobId")
        return await self.table.store.call(job_logs.page, job_id, after, limit)  # type: ignore[no-any-return]

    async def cancel(self, job_id: str, reason: str = "user", caller: Caller | None = None) -> Job:
        """Cancel a live job wherever it runs; waits briefly for it to stop.

        Returns the job as it then is: terminal, or still stopping.
        """
        job = await self.get(job_id)
        by = None if caller is None else caller.who()
        if job.status not in TERMINAL:
            log.info("job %s: cancel requested (%s)", job_id, reason, extra=about_job(job_id))
        for _ in range(3):  # a pending job may be claimed while we look at it
            if job.status in TERMINAL:
                raise NotCancellable(
                    f"job {job_id} is already {job.status} and cannot be cancelled",
                )
            if await self.scheduler.cancel_local(job_id, reason, by):
                deadline = time.monotonic() + self.settings.cancel_wait_s
                await self.table.wait(job_id, self.settings.cancel_wait_s)
                # Its final state is written while its child exits: "cancelled"
                # is answered once both are done.
                await self.scheduler.wait_gone(job_id, deadline)
                live = self.table.get(job_id)
                if live is not None and live.status not in TERMINAL:
                    await self.table.persist(live)  # a 202 "cancelling" is on record
                if live is not None and await self.table.persisted(job_id):
                    return live
                # Fenced off: another instance holds the job now; ask it instead.
                job = await self.get(job_id)
                continue
            if job.status in UNCLAIMED and job.owner is None:
                if await self.scheduler.cancel_unclaimed(job, reason, by):
                    return await self.get(job_id)
            elif job.owner is not None:
                request = {"requestedAt": now().isoformat(), "reason": reason, "requestedBy": by}
                await self.table.store.call(
                    claims.request_cancel, job_id, request, now_ms(), write=True
                )
                return await self._wait_in_store(job_id)
            job = await self.get(job_id)
        return job

    async def _wait_in_store(
        self, job_id: str, until: Callable[[Job], bool] = lambda j: j.status in TERMINAL
    ) -> Job:
        """Wait, with a deadline, for another instance to stop the job (or bring it ``until``)."""
        deadline = time.monotonic() + self.settings.cancel_wait_s
        while True:
            job = await self.get(job_id)
            if until(job) or time.monotonic() >= deadline:
                return job
            await asyncio.sleep(REMOTE_POLL_S)

    async def pause(self, job_id: str, freeze: bool = False) -> Job:
        """Pause a running job wherever it runs; waits briefly for it to hold.

        Cooperative: the job holds at its next context call (``pausing``
        until it does). ``freeze``: its process group is stopped at once
        (only for job types declared ``freezable``). Returns the job as it
        then is: ``paused``, or still ``pausing``.
        """
        job = await self.get(job_id)
        if freeze and not _freezable(job.type):
            raise Invalid(
                f"mode: jobs of type {job.type!r} cannot be frozen (not declared freezable);"
                " pause them cooperatively",
                "mode",
            )
        if job.status is not JobStatus.RUNNING:
            raise NotRunning(f"job {job_id} is {job.status}: only a running job can be paused")
        log.info(
            "job %s: pause requested (%s)",
            job_id,
            "freeze" if freeze else "cooperative",
            extra=about_job(job_id),
        )
        held = lambda j: j.status is not JobStatus.PAUSING  # noqa: E731
        if self.scheduler.pause_local(job_id, freeze):
            await self.table.wait(job_id, self.settings.cancel_wait_s, until=held)
            return _paused_or_pausing(await self._answer(job_id))
        if job.owner is None:  # running, yet nobody holds it: its instance just ended
            raise NotRunning(f"job {job_id} is not running on any instance")
        action = "freeze" if freeze else "pause"
        await self.table.store.call(claims.request_pause, job_id, action, now_ms(), write=True)
        return _paused_or_pausing(
            await self._wait_in_store(
                job_id, lambda j: j.status not in (JobStatus.RUNNING, JobStatus.PAUSING)
            )
        )

    async def resume(self, job_id: str) -> Job:
        """Resume a paused job wherever it is held (or waits, paused across a restart)."""
        job = await self.get(job_id)
        if job.status is not JobStatus.PAUSED:
            raise NotPaused(f"job {job_id} is {job.status}: only a paused job can be resumed")
        log.info("job %s: resume requested", job_id, extra=about_job(job_id))
        if self.scheduler.resume_local(job_id):
            return _resumed(await self._answer(job_id))
        if job.owner is None:  # paused across a restart: back to the queue
            if await self.table.store.call(claims.resume_unclaimed, job_id, now_ms(), write=True):
                self.scheduler.wake()
            return _resumed(await self.get(job_id))
        await self.table.store.call(claims.request_pause, job_id, "resume", now_ms(), write=True)
        return _resumed(
            await self._wait_in_store(job_id, lambda j: j.status is not JobStatus.PAUSED)
        )

    async def _answer(self, job_id: str) -> Job:
        """The job as this instance holds it, its latest state written first."""
        live = self.table.get(job_id)
        if live is None:
            return await self.get(job_id)
        await self.table.persisted(job_id)
        return live

    async def list(self, f: sql.JobFilter) -> list[Job]:
        return await self.table.list(f)
