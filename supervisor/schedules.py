"""Recurring schedules: a start request fired by cron, in a time zone, once per tick.

A schedule is validated whole when it is put (the cron expression, the
zone, and its job as a start would check it), and stored with its next
tick. Every instance runs ``ScheduleService.tick`` in a background loop;
each due schedule fires through ``store.schedules.fire``, one transaction
that moves the tick on only if it is still the one this instance saw and
inserts the job with it. So each tick starts exactly one job, whichever
instances are up, however they start, stop or crash around it.

A job whose exclusive key (its group, say) is still held by the previous
run is not piled up: the tick is recorded as skipped, with the holder.
What a tick does when it is late is ``supervisor.cron.settle``'s.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import msgspec

from supervisor import cron
from supervisor.errors import Invalid, NotFound, Rejected, Unavailable
from supervisor.events import Kind
from supervisor.parsing import decode
from supervisor.scheduler import Scheduler
from supervisor.service import JobService
from supervisor.settings import Settings
from supervisor.store import DatabaseBusy, Store
from supervisor.store import schedules as sql
from workers.db import DatabaseUnavailable
from workers.times import from_ms, now_ms, to_ms

log = logging.getLogger("jobsup.schedules")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Due schedules fired per look; more wait for the next look, at once.
DUE_BATCH = 100
# What a schedule's answer shows: its next ticks and its latest ones.
UPCOMING = 5
RECENT = 20


class ScheduleIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True):
    cron: str
    job: msgspec.Raw
    timezone: str = "UTC"
    enabled: bool = True
    catch_up: cron.CatchUp = cron.CatchUp.ONE


class TickView(msgspec.Struct, rename="camel", omit_defaults=True):
    """One tick: the job it started (and that job's status now), or why it started none."""

    tick_at: datetime
    at: datetime
    job_id: str | None = None
    job_status: str | None = None
    skipped: str | None = None


class ScheduleView(msgspec.Struct, rename="camel", omit_defaults=True):
    name: str
    cron: str
    timezone: str
    job: msgspec.Raw
    enabled: bool
    catch_up: str
    next_fire_at: datetime | None  # None while disabled
    created_at: datetime
    updated_at: datetime
    upcoming: list[datetime] | None = None  # a single schedule's answer only
    recent: list[TickView] | None = None


def _view(row: sql.Row) -> ScheduleView:
    return ScheduleView(
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        job=msgspec.Raw(row.job.encode()),
        enabled=row.enabled,
        catch_up=row.catch_up,
        next_fire_at=from_ms(row.next_fire_at) if row.enabled else None,
        created_at=from_ms(row.created_at),
        updated_at=from_ms(row.updated_at),
    )


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise Invalid(
            "name: 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit",
            "name",
        )
    return name


def _under_job(exc: Invalid) -> Invalid:
    """An error in the schedule's job, named as ``job.<field>`` (400, even for a 404 check)."""
    field = f"job.{exc.field}" if exc.field else "job"
    message = exc.message
    if exc.field and message.startswith(f"{exc.field}: "):
        message = message[len(exc.field) + 2 :]
    return Rejected(f"{field}: {message}", field, 400)


class ScheduleService:
    def __init__(
        self, jobs: JobService, store: Store, scheduler: Scheduler, settings: Settings
    ) -> None:
        self.jobs = jobs
        self.store = store
        self.scheduler = scheduler
        self.settings = settings

    async def put(
        self, name: str, body: bytes, now: datetime | None = None
    ) -> tuple[ScheduleView, bool]:
        """Create or replace a schedule, all checked first; returns it and whether it is new."""
        check_name(name)
        spec = decode(body, ScheduleIn)
        try:
            expression = cron.parse_cron(spec.cron)
        except cron.BadCron as exc:
            raise Invalid(f"cron: {exc}", "cron") from None
        try:
            tz = cron.zone(spec.timezone)
        except cron.BadZone as exc:
            raise Invalid(f"timezone: {exc}", "timezone") from None
        job = bytes(spec.job)
        try:
            await self.jobs.validate(job)
        except Invalid as exc:
            raise _under_job(exc) from None
        now = now or datetime.now(UTC)
        next_at = cron.next_fire(expression, tz, now)
        row, created = await self.store.call(
            sql.put,
            name,
            expression,
            spec.timezone,
            job.decode(),
            spec.enabled,
            spec.catch_up.value,
            to_ms(next_at),
            to_ms(now),
            write=True,
            queue_timeout=5.0,
        )
        log.info(
            "schedule %s %s: %s in %s",
            name,
            "created" if created else "replaced",
            expression,
            spec.timezone,
        )
        return await self._detailed(row), created

    async def get(self, name: str) -> ScheduleView:
        row = await self.store.call(sql.get, check_name(name))
        if row is None:
            raise NotFound(f"no schedule {name!r}", "name")
        return await self._detailed(row)

    async def _detailed(self, row: sql.Row) -> ScheduleView:
        view = _view(row)
        ticks = await self.store.call(sql.ticks, row.name, RECENT)
        view.recent = [
            TickView(from_ms(t.tick_at), from_ms(t.at), t.job_id, t.job_status, t.skipped)
            for t in ticks
        ]
        if row.enabled:
            first = from_ms(row.next_fire_at)
            try:
                tz = cron.zone(row.timezone)
                view.upcoming = [first, *cron.upcoming(row.cron, tz, first, UPCOMING - 1)]
            except (cron.BadZone, cron.BadCron):  # the host's zone database lost the zone
                view.upcoming = [first]
        else:
            view.upcoming = []
        return view

    async def list(self, after: str | None, limit: int) -> tuple[list[ScheduleView], str | None]:
        """Schedules by name; the cursor of the next page, if there is one."""
        rows = await self.store.call(sql.list_page, after, limit)
        more = len(rows) > limit
        rows = rows[:limit]
        return [_view(r) for r in rows], rows[-1].name if more else None

    async def delete(self, name: str) -> None:
        if not await self.store.call(sql.delete, check_name(name), write=True, queue_timeout=5.0):
            raise NotFound(f"no schedule {name!r}", "name")
        log.info("schedule %s deleted", name)

    # -- firing ------------------------------------------------------------------

    async def tick(self, now: datetime | None = None) -> float:
        """Fire every schedule due now; seconds until the earliest tick known after them."""
        if not self.scheduler.accepting:
            return self.settings.poll_s  # shutting down: the other instances fire
        now = now or datetime.now(UTC)
        rows, later = await self.store.call(sql.due, to_ms(now), DUE_BATCH)
        for row in rows:
            try:
                await self._fire(row, now)
            except (DatabaseUnavailable, DatabaseBusy):
                raise  # the loop says so once, and looks again
            except Unavailable as exc:  # the job type's check cannot reach what it needs
                log.warning("schedule %s: its tick waits (%s)", row.name, exc.message)
            except Exception:
                due = from_ms(row.next_fire_at)
                log.exception("schedule %s: its tick at %s failed", row.name, due)
        if len(rows) == DUE_BATCH:
            return 0.0
        if later is None:
            return self.settings.poll_s
        return max(0.0, (later - now_ms()) / 1000)

    async def _fire(self, row: sql.Row, now: datetime) -> None:
        tz = cron.zone(row.timezone)
        due = from_ms(row.next_fire_at)
        # Late past a minute, or past two looks if they are further apart: missed.
        missed_after_s = max(cron.MISSED_AFTER_S, 2 * self.settings.poll_s)
        tick = cron.settle(row.cron, tz, due, now, cron.CatchUp(row.catch_up), missed_after_s)
        job = key = label = skipped = rank = None
        if tick.missed:
            skipped = "missed: no instance fired it on time, and catchUp is none"
        else:
            try:
                prepared = await self.jobs.prepare(row.job.encode())
            except Invalid as exc:
                skipped = f"the job was refused: {exc.message}"
            else:  # with its start fields: priority, retry, delayS, idempotencyKey
                job, key, label = prepared.job, prepared.key, prepared.label
                rank = prepared.rank
        fired = await self.store.call(
            sql.fire,
            row,
            to_ms(tick.next_at),
            job,
            key,
            label,
            skipped,
            now_ms(),
            self.settings.max_pending_jobs,
            rank,
            int(self.settings.idempotency_ttl_s * 1000),
            self.jobs.table.notices.notice_of,
            write=True,
            retry_for=5.0,
        )
        if not fired.mine:
            return  # another instance had this tick, or the schedule changed meanwhile
        if job is not None and fired.job_id == job.id:
            log.info("schedule %s: tick %s started job %s", row.name, due, job.id)
            self.jobs.table.events.publish(Kind.CREATED, job)  # as a start's insert does
            if job.run_at is not None:  # its job has a delayS: it waits scheduled
                self.scheduler.wake_at(job.run_at)
            else:
                self.scheduler.wake()
        else:
            log.info("schedule %s: tick %s skipped: %s", row.name, due, fired.skipped)
