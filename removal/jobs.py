"""The removal job types: removal_workflow (sync, then removal) and removal_queue.

Removal walks a snapshot of the queue in batches of ``batchSize``, ``delayMs``
apart (WhatsApp rate limits), checking each member again just before it is
removed. Each batch is removed, dequeued and written to the history as one
fact (``removal.steps``), so a job stopped at any point, even by
SIGKILL, leaves a queue that a new job can pick up and a history that equals
what was done.

Both types are resumable: a live removal saves its ``Place`` after its sync
and after every batch. Run again (a deploy put it back in the queue, or its
instance died), it skips the sync, walks what is still queued (a processed
member is dequeued with its history row, so none is processed twice) and
waits out what remains of its delay first, so that WhatsApp's pacing holds
across the restart.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple

import msgspec

from removal.directory import MIGRATIONS, current_ms, group_exists, outcomes_of_job, queue
from removal.directory.queue import Plan, QueueEntry
from removal.gateways import Gateway, GatewayError, evolution, gateway_for, status
from removal.steps import Writer, remove_batch, settle_leftovers, sync
from workers.context import JobContext
from workers.db import Database, connect
from workers.registry import (
    ConfigRejected,
    JobConfig,
    Label,
    Policy,
    Retry,
    Setting,
    extend,
    job_type,
)


class RemovalQueueConfig(JobConfig, tag="removal_queue"):
    group_wa_id: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    batch_size: Annotated[int, msgspec.Meta(gt=0, le=10_000)]
    delay_ms: Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]  # at most a day
    dry_run: bool


class RemovalWorkflowConfig(RemovalQueueConfig, tag="removal_workflow"):
    inactivity_window_ms: Annotated[int, msgspec.Meta(gt=0, le=315_360_000_000)]  # 10 years
    # A plan's real run (POST /admin/groups/{id}/removal-plans): only these
    # members, those its dry run would remove, are ever queued or removed;
    # each is checked again, and one no longer removable is skipped with a
    # history row saying why.
    only_whatsapp_ids: Annotated[list[str], msgspec.Meta(max_length=100_000)] | None = None


class Failure(msgspec.Struct, rename="camel"):
    whatsapp_id: str
    reason: str


class Place(msgspec.Struct, rename="camel"):
    """Where a live removal is (``ctx.save``): after its sync, then after every batch."""

    queued: int = 0  # what the sync queued
    batches_done: int = 0
    due_at_ms: int = 0  # the next batch starts no earlier (epoch ms): WhatsApp's pacing


class RemovalResult(msgspec.Struct, rename="camel"):
    """The job's result, and its partial result after every batch."""

    group_wa_id: str
    dry_run: bool
    queued: int = 0  # queued by this job's sync; in a dry run, what it would queue
    removed_whatsapp_ids: list[str] = msgspec.field(default_factory=list)
    failed: list[Failure] = msgspec.field(default_factory=list)
    skipped_whatsapp_ids: list[str] = msgspec.field(default_factory=list)
    would_remove_whatsapp_ids: list[str] = msgspec.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result


# Runs one batch: decides, acts, and records what happened into the result.
Step = Callable[[Sequence[QueueEntry]], None]


def group_key(config: RemovalQueueConfig) -> str:
    return f"group:{config.group_wa_id}"


NO_POLICY = Policy(min_delay_ms=0)


def check_group(config: RemovalQueueConfig, db: Database, policy: Policy = NO_POLICY) -> None:
    """Refuse a removal that would break WhatsApp's rate limits or has no group.

    The delay floor holds for dry runs too (they do not wait), so that a dry
    run's config is one the real run will accept. With the Evolution
    gateway, the instance must be connected, accept our key and know the
    group (one quick look, on this database reader thread).
    """
    if config.delay_ms < policy.min_delay_ms:
        raise ConfigRejected(
            "delayMs",
            f"delayMs: must be at least {policy.min_delay_ms} ms between batches "
            "(WhatsApp rate limits; JOBSUP_MIN_DELAY_MS)",
        )
    if getattr(policy, "gateway", "local") == "evolution":
        _check_evolution(config.group_wa_id, policy)
    if not group_exists(db, config.group_wa_id):
        raise ConfigRejected(
            "groupWaId", f"groupWaId: unknown group {config.group_wa_id!r}", status=404
        )


# A gateway's refusal at start, as the answer to the start request.
_CHECK_STATUS = {
    GatewayError.NO_GROUP: 404,
    GatewayError.REJECTED: 400,
    GatewayError.FORBIDDEN: 403,
}


def _check_evolution(group_wa_id: str, policy: Policy) -> None:
    try:
        evolution.probe(evolution.settings_from_policy(policy), group_wa_id)
    except GatewayError as exc:
        status.record_error(exc.reason)
        raise ConfigRejected(
            "groupWaId", exc.reason, status=_CHECK_STATUS.get(exc.kind, 503)
        ) from None


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise ValueError("must be a positive number of seconds")
    return number


def _gateway_name(value: str) -> str:
    if value not in ("local", "evolution"):
        raise ValueError("must be local or evolution")
    return value


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError("must be an http:// or https:// URL")
    return value


def _validate(policy: Policy) -> None:
    evolution.validate(policy)
    # RFC 7518 3.2: an HS256 key at least as long as the hash.
    key = policy.webhook_jwt_key.value
    if key and len(key.encode()) < 32:
        raise ValueError("JOBSUP_WEBHOOK_JWT_KEY must be at least 32 bytes (an HS256 key)")


# What the removal domain adds to the supervisor: the directory's tables, the
# /admin/groups and /admin/gateway routes (front process only), the webhook
# and import routes, the jobsup import command, the delay floor between
# batches (WhatsApp rate limits), the gateway and its settings, the webhooks'
# credentials, and its jobs listed by group (?groupWaId=).
extend(
    "directory",
    migrations=MIGRATIONS,
    routes="removal.api:routes",
    commands="removal.importer:add_parser",
    settings=[
        Setting("min_delay_ms", 10_000, int, minimum=0),
        Setting("gateway", "local", _gateway_name),
        Setting("evolution_api_url", "", _http_url, variable="EVOLUTION_API_URL"),
        Setting("evolution_api_key", "", str, variable="EVOLUTION_API_KEY", secret=True),
        Setting("evolution_instance", "", str, variable="EVOLUTION_INSTANCE"),
        Setting("evolution_timeout_s", 30.0, _positive, variable="EVOLUTION_TIMEOUT_S"),
        Setting("gateway_backoff_ms", 2_000, int, minimum=1),
        Setting("gateway_retries", 5, int, minimum=0),
        # The webhook routes' credentials (removal.webhooks); neither set: they refuse.
        Setting("webhook_secret", "", str, secret=True),
        Setting("webhook_jwt_key", "", str, secret=True),
    ],
    validate=_validate,
)
BY_GROUP = Label("groupWaId", lambda config: config.group_wa_id)
# A removal retries a gateway outage that did nothing (GatewayOutage), and
# nothing else: a crash or a database failure in the middle of a remote
# batch may leave removals whose answer never came back, which only a sync
# settles (a new run's), and a refusal fails the same way again. A retried
# attempt resumes from the saved place and the queue: a member already
# removed left the queue in its batch's transaction, with its history row,
# so no attempt removes anyone twice.
RETRY = Retry(max_attempts=3, backoff_s=30.0, retry_on=("GatewayOutage",))


class GatewayOutage(GatewayError):
    """The gateway was unavailable for a whole batch and nothing happened: worth another try."""


@job_type(
    RemovalWorkflowConfig,
    idempotent=True,
    exclusive_key=group_key,
    check=check_group,
    label=BY_GROUP,
    resumable=True,
    retry=RETRY,
)
def removal_workflow(ctx: JobContext, config: RemovalWorkflowConfig) -> dict[str, Any]:
    """Sync the group's members, queue the inactive ones, then remove them in batches."""
    return _against_directory(ctx, config, run_workflow)


@job_type(
    RemovalQueueConfig,
    idempotent=True,
    exclusive_key=group_key,
    check=check_group,
    label=BY_GROUP,
    resumable=True,
    retry=RETRY,
)
def removal_queue_job(ctx: JobContext, config: RemovalQueueConfig) -> dict[str, Any]:
    """Remove the members already in the group's removal queue, in batches."""
    return _against_directory(ctx, config, run_queue)


def _against_directory(ctx: JobContext, config: Any, run: Callable[..., Any]) -> Any:
    """Run a removal with its own connection and the group's gateway."""
    db = connect(ctx.database_url)
    gateway = gateway_for(db, config.group_wa_id, sleep=ctx.sleep, log=ctx.log)
    try:
        # Checked at the start too: a group deleted just after this job was
        # accepted (past its check) must not be written to again.
        if not group_exists(db, config.group_wa_id):
            raise LookupError(f"group {config.group_wa_id!r} was deleted before the job began")
        return run(ctx, db, gateway, config)
    finally:
        close = getattr(gateway, "close", None)
        if close is not None:
            close()
        db.close()


def run_workflow(
    ctx: JobContext, db: Database, gateway: Gateway, config: RemovalWorkflowConfig
) -> dict[str, Any]:
    place = _resumed_place(ctx, config)
    if place is not None:  # synced before it was interrupted: the queue is its plan
        # A call in flight when it was interrupted left intents: settle them first,
        # or their members (perhaps already removed) stay queued and unrecorded.
        interrupted = settle_leftovers(db, gateway, _writer(ctx), config.group_wa_id)
        result = _begin(ctx, db, config, queued=place.queued)
        if interrupted:
            _after_a_call(place, config)
        return _remove_queued(ctx, db, gateway, config, result, place)
    result = _begin(ctx, db, config)
    group, window = config.group_wa_id, config.inactivity_window_ms
    ctx.progress(message="fetching members", phase="sync")
    fetched = gateway.fetch_members(group)
    if config.dry_run:
        plan = queue.preview(
            db, group, current_ms(), fetched=fetched, window_ms=window, job_id=ctx.job_id
        )
        result.queued = plan.queued  # what a user reads as the sync's count, dry or not
        ctx.progress(message=f"{plan.queued} inactive members would be queued", phase="sync")
        return _walk(ctx, plan.entries, _dry_step(plan, result), result, config.batch_size, 0)
    result.queued = sync(db, _writer(ctx), group, fetched, window, config.only_whatsapp_ids)
    ctx.partial(result.as_dict())
    place = Place(queued=result.queued, due_at_ms=current_ms())
    ctx.save(place)
    ctx.progress(message=f"queued {result.queued} inactive members", phase="sync")
    return _remove_queued(ctx, db, gateway, config, result, place)


def run_queue(
    ctx: JobContext, db: Database, gateway: Gateway, config: RemovalQueueConfig
) -> dict[str, Any]:
    if config.dry_run:
        result = _begin(ctx, db, config)
        plan = queue.preview(db, config.group_wa_id, current_ms())
        return _walk(ctx, plan.entries, _dry_step(plan, result), result, config.batch_size, 0)
    interrupted = settle_leftovers(db, gateway, _writer(ctx), config.group_wa_id)
    result = _begin(ctx, db, config)
    place = _resumed_place(ctx, config) or Place()
    if interrupted:
        _after_a_call(place, config)
    return _remove_queued(ctx, db, gateway, config, result, place)


def _after_a_call(place: Place, config: RemovalQueueConfig) -> None:
    """A run stopped during a remote call left its intents: WhatsApp saw that call.

    It was made before now, maybe after retries the journal does not date:
    the next batch waits a whole delay from now, so the pacing holds.
    """
    place.due_at_ms = max(place.due_at_ms, current_ms() + config.delay_ms)


def _resumed_place(ctx: JobContext, config: RemovalQueueConfig) -> Place | None:
    """The place a live removal saved before it was interrupted, if this run resumes one."""
    if not ctx.resumed or config.dry_run:
        return None
    return msgspec.convert(ctx.state, Place)


def _writer(ctx: JobContext) -> Writer:
    return Writer(ctx.job_id, ctx.attempt, ctx.fence)


def _begin(
    ctx: JobContext, db: Database, config: RemovalQueueConfig, queued: int = 0
) -> RemovalResult:
    """The result as it stands before this run acts, shown at once; then the first cancel point.

    Even a job cancelled before doing anything shows the shape of its result,
    and a job run again (rescued after its instance died) what its earlier
    runs removed: a cancel here must not hide them.
    """
    result = RemovalResult(config.group_wa_id, config.dry_run, queued=queued)
    if not config.dry_run:
        _carry_over(db, ctx.job_id, (), result)
    ctx.partial(result.as_dict())
    ctx.checkpoint()
    return result


def _remove_queued(
    ctx: JobContext,
    db: Database,
    gateway: Gateway,
    config: RemovalQueueConfig,
    result: RemovalResult,
    place: Place,
) -> dict[str, Any]:
    entries = queue.read_queue(db, config.group_wa_id)
    pinned: list[str] | None = getattr(config, "only_whatsapp_ids", None)
    if pinned is not None:  # a plan's run: nobody it was not approved for
        only = set(pinned)
        entries = [entry for entry in entries if entry.whatsapp_id in only]
    last_row_ms = _carry_over(db, ctx.job_id, entries, result)
    if last_row_ms is not None:  # a batch may have landed after the place was saved
        place.due_at_ms = max(place.due_at_ms, last_row_ms + config.delay_ms)
        recorded = -(-_processed(result) // config.batch_size)  # batches with rows, at least
        place.batches_done = max(place.batches_done, recorded)
    step = _live_step(ctx, db, gateway, result, record_skips=pinned is not None)

    def saved(batches_done: int) -> None:
        place.batches_done = batches_done
        place.due_at_ms = current_ms() + config.delay_ms
        ctx.save(place)

    return _walk(
        ctx,
        entries,
        step,
        result,
        config.batch_size,
        config.delay_ms / 1000,
        resume=Resume(place.batches_done, _processed(result), place.due_at_ms, saved),
    )


def _processed(result: RemovalResult) -> int:
    return len(result.removed_whatsapp_ids) + len(result.failed)


def _carry_over(
    db: Database, job_id: str, entries: Sequence[QueueEntry], result: RemovalResult
) -> int | None:
    """A job run again (rescued after its instance died) reports its earlier runs too.

    Its history rows are what those runs did: every member they removed, and
    every failure not retried now (a member still queued gets this run's outcome).
    Sets the result's removals and failures to those (called again once the
    queue is read). Returns when the last of those rows was written (epoch
    ms), None if none was.
    """
    retried = {entry.whatsapp_id for entry in entries}
    latest: dict[str, tuple[str, str | None]] = {}
    last_ms: int | None = None
    for wid, outcome, reason, at in outcomes_of_job(db, job_id):
        latest.pop(wid, None)  # ordered by each member's last outcome
        latest[wid] = (outcome, reason)
        last_ms = at
    removed = [wid for wid, (outcome, _) in latest.items() if outcome == "SUCCESS"]
    result.removed_whatsapp_ids = removed
    result.failed = [
        Failure(wid, reason or "")
        for wid, (outcome, reason) in latest.items()
        if outcome != "SUCCESS" and wid not in retried
    ]
    return last_ms


class Resume(NamedTuple):
    """Where a live walk starts, and what it calls after each batch (to save its place)."""

    batches_done: int = 0
    processed: int = 0  # members its earlier runs processed
    due_at_ms: int = 0  # its first batch starts no earlier (epoch ms)
    after_batch: Callable[[int], None] | None = None


FROM_START = Resume()


def _walk(
    ctx: JobContext,
    entries: list[QueueEntry],
    step: Step,
    result: RemovalResult,
    batch_size: int,
    delay_s: float,
    resume: Resume = FROM_START,
) -> dict[str, Any]:
    """Run ``step`` over ``entries`` in batches: cancel points, progress, partials.

    The batches are cut from a snapshot taken once, so no batch is ever read
    twice, whether or not the steps change the queue. A resumed walk goes on
    from where its earlier runs stopped: numbering, counts and pacing.
    """
    done, before = resume.batches_done, resume.processed
    total = before + len(entries)
    batches = [entries[i : i + batch_size] for i in range(0, len(entries), batch_size)]
    last = done + len(batches)
    ctx.progress(processed=before, total=total, message=f"{total - before} queued", phase="removal")
    wait_s = (resume.due_at_ms - current_ms()) / 1000
    for number, batch in enumerate(batches, start=done + 1):
        if number > done + 1:
            wait_s = delay_s
        if wait_s > 0:
            ctx.sleep(wait_s)
        ctx.checkpoint()
        ctx.flush()  # a batch may take long: show where the job is while it runs
        # Removing and recording a batch is one unit: a SIGTERM waits for it.
        with ctx.shielded():
            step(batch)
            ctx.partial(result.as_dict())
            if resume.after_batch is not None:
                resume.after_batch(number)
        tally = f"batch {number}/{last}: {_tally(result)}"
        ctx.progress(
            processed=min(before + (number - done) * batch_size, total),
            total=total,
            message=tally,
            phase="removal",
        )
        ctx.log(tally)  # the job's own log (GET /admin/jobs/{id}/logs) keeps every batch
    return result.as_dict()


def _tally(result: RemovalResult) -> str:
    skipped = f"{len(result.skipped_whatsapp_ids)} skipped"
    if result.dry_run:
        return f"{len(result.would_remove_whatsapp_ids)} would be removed, {skipped}"
    return f"{len(result.removed_whatsapp_ids)} removed, {len(result.failed)} failed, {skipped}"


def _dry_step(plan: Plan, result: RemovalResult) -> Step:
    def step(batch: Sequence[QueueEntry]) -> None:
        verdicts = plan.verdicts.only(batch)
        result.would_remove_whatsapp_ids.extend(verdicts.removable)
        result.skipped_whatsapp_ids.extend(verdicts.skipped)

    return step


def _live_step(
    ctx: JobContext, db: Database, gateway: Gateway, result: RemovalResult, record_skips: bool
) -> Step:
    group, writer = result.group_wa_id, _writer(ctx)

    def step(batch: Sequence[QueueEntry]) -> None:
        outcome = remove_batch(db, gateway, writer, group, batch, record_skips)
        for wid, why in outcome.skipped.items():
            ctx.log(f"skipped {wid}: {why}")
        result.removed_whatsapp_ids.extend(outcome.removed)
        result.failed.extend(Failure(wid, reason) for wid, reason in outcome.failed.items())
        result.skipped_whatsapp_ids.extend(outcome.skipped)
        if outcome.error is not None:  # the gateway failed the whole batch: stop here
            ctx.partial(result.as_dict())
            error = outcome.error
            if error.kind == GatewayError.UNAVAILABLE and not error.unsure:
                raise GatewayOutage(error.reason, error.kind, transient=True) from error
            raise error

    return step
