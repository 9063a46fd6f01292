"""The removal's writes: the sync and each batch, fenced, and one fact with their history.

Every write that acts on the world first makes sure this run still owns its
job (``workers.fence``), inside the same transaction, so a stale run (its
instance stalled and its job rescued) writes nothing.

A batch through a gateway in our database is one transaction: fence,
re-check, remove, dequeue, history. A batch through a remote gateway is
three steps: fence, re-check and journal the intents; the gateway call; the
settle of the intents into outcome rows (``removal.directory.journal``). A
call that failed whole and surely did nothing turns the intents into
FAILURE rows and leaves the members queued; one that may have acted (no
answer) leaves them to the next sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from removal.directory import MemberIn, current_ms, journal, queue
from removal.directory.journal import ALREADY_GONE, NO_ANSWER
from removal.directory.queue import QueueEntry
from removal.gateways import Gateway, GatewayError
from workers.db import Database
from workers.fence import Fence

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Writer:
    """Who is writing: the job, its attempt, and its fence (None outside the supervisor)."""

    job_id: str
    attempt: int
    fence: Fence | None


@dataclass(slots=True)
class BatchOutcome:
    removed: dict[str, str] = field(default_factory=dict)  # whatsapp id -> reason
    failed: dict[str, str] = field(default_factory=dict)  # whatsapp id -> reason
    skipped: dict[str, str] = field(default_factory=dict)  # whatsapp id -> why
    # The whole call failed (the members in ``failed`` stay queued): the job stops.
    error: GatewayError | None = None


def sync(
    db: Database,
    writer: Writer,
    group_wa_id: str,
    fetched: list[MemberIn] | None,
    window_ms: int,
    only: Sequence[str] | None = None,
) -> int:
    """Settle leftover intents, apply the gateway's ``fetched`` members, queue the inactive
    (or, with ``only``, a plan's pinned members and nobody else).

    One transaction; returns how many were queued. The intents are settled
    from the very member list the refresh applies, before it: a member a
    dead run removed remotely is recorded as removed, never taken for one
    who left.
    """
    now = current_ms()
    with db.transaction():
        if fetched is not None:
            journal.settle_leftovers(db, group_wa_id, fetched, now)
        queued = queue.sync(db, group_wa_id, fetched, window_ms, now, writer.job_id, only)
        _hold(db, writer)
    return queued


def settle_leftovers(db: Database, gateway: Gateway, writer: Writer, group_wa_id: str) -> bool:
    """Before a removal without a sync: settle what a dead run left in the journal.

    Returns whether there was anything: a run stopped during a remote call
    (or between its retries), which WhatsApp saw and which paces the next.
    """
    if gateway.transactional or not journal.pending(db, group_wa_id):
        return False  # a gateway in our database never journals
    fetched = gateway.fetch_members(group_wa_id)
    if fetched is None:
        return True  # nothing to settle from: the intents wait for a gateway that can tell
    with db.transaction():
        journal.settle_leftovers(db, group_wa_id, fetched, current_ms())
        _hold(db, writer)
    return True


def remove_batch(
    db: Database,
    gateway: Gateway,
    writer: Writer,
    group_wa_id: str,
    batch: Sequence[QueueEntry],
    record_skips: bool = False,
) -> BatchOutcome:
    """Remove one batch and record it; raises ``StaleRun`` (nothing done) if the run is stale.

    ``record_skips``: a member skipped gets a history row saying why (a
    plan's run: someone approved for removal and not removed is on record).
    """
    if gateway.transactional:
        return _in_one_transaction(db, gateway, writer, group_wa_id, batch, record_skips)
    return _journaled(db, gateway, writer, group_wa_id, batch, record_skips)


def _in_one_transaction(
    db: Database,
    gateway: Gateway,
    writer: Writer,
    group_wa_id: str,
    batch: Sequence[QueueEntry],
    record_skips: bool,
) -> BatchOutcome:
    now = current_ms()
    with db.transaction():
        if writer.fence is not None:
            writer.fence.check(db)  # no work for a run already stale
        verdicts = queue.revalidate(db, group_wa_id, batch, now)
        reasons = _reasons(verdicts.removable)
        answers = gateway.remove(group_wa_id, list(reasons)) if reasons else {}
        outcome = _outcome(reasons, answers, verdicts.skipped)
        queue.record_batch(
            db,
            group_wa_id,
            removed=outcome.removed,
            failed=outcome.failed,
            skipped=list(outcome.skipped),
            job_id=writer.job_id,
            now_ms=now,
            attempt=writer.attempt,
            skip_reasons=outcome.skipped if record_skips else None,
        )
        # Locked last, so a rescue waits for this commit only, not the whole batch.
        _hold(db, writer)
    return outcome


def _journaled(
    db: Database,
    gateway: Gateway,
    writer: Writer,
    group_wa_id: str,
    batch: Sequence[QueueEntry],
    record_skips: bool,
) -> BatchOutcome:
    now = current_ms()
    with db.transaction():
        _hold(db, writer)
        verdicts = queue.revalidate(db, group_wa_id, batch, now)
        intents = journal.write_intents(
            db,
            group_wa_id,
            _reasons(verdicts.removable),
            job_id=writer.job_id,
            attempt=writer.attempt,
            now_ms=now,
        )
        queue.record_batch(
            db,
            group_wa_id,
            removed={},
            failed={},
            skipped=list(verdicts.skipped),
            job_id=writer.job_id,
            now_ms=now,
            attempt=writer.attempt,
            skip_reasons=verdicts.skipped if record_skips else None,
        )
    try:
        answers = gateway.remove(group_wa_id, list(intents)) if intents else {}
    except GatewayError as exc:
        failed: list[str] = []
        if not exc.unsure:  # nothing happened: FAILURE rows, the members stay queued
            with db.transaction():
                failed = journal.fail(
                    db,
                    group_wa_id,
                    intents,
                    exc.reason,
                    job_id=writer.job_id,
                    attempt=writer.attempt,
                    now_ms=current_ms(),
                )
        # Unsure (no answer came back): the intents wait for the next sync,
        # which settles them from the group's real member list.
        return BatchOutcome({}, dict.fromkeys(failed, exc.reason), dict(verdicts.skipped), exc)
    with db.transaction():
        settled = journal.settle(
            db,
            group_wa_id,
            intents,
            answers,
            job_id=writer.job_id,
            attempt=writer.attempt,
            now_ms=current_ms(),
        )
    return BatchOutcome(settled.removed, settled.failed, dict(verdicts.skipped))


def _hold(db: Database, writer: Writer) -> None:
    if writer.fence is not None:
        writer.fence.hold(db)


def _reasons(removable: dict[str, int]) -> dict[str, str]:
    """What a removal records: how long the member had been inactive."""
    return {wid: f"inactive for {ms // DAY_MS} days" for wid, ms in removable.items()}


def _outcome(
    reasons: dict[str, str], answers: dict[str, str | None], skipped: dict[str, str]
) -> BatchOutcome:
    outcome = BatchOutcome(skipped=dict(skipped))
    for wid, reason in reasons.items():
        answer = answers.get(wid, NO_ANSWER)
        if answer is None:
            outcome.removed[wid] = reason
        elif answer == ALREADY_GONE:
            outcome.removed[wid] = ALREADY_GONE
        else:
            outcome.failed[wid] = answer
    return outcome
