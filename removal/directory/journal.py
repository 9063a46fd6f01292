"""The journal of removals asked of a remote gateway.

A remote removal cannot share a transaction with our history. So a run first
writes a PENDING intent per member (``removal_intents``: job id, attempt, the
reason it will record), in the transaction that checks its fence; then it
calls the gateway; then ``settle`` turns each intent it still holds into its
outcome row, in one transaction. A run that dies between the two leaves
intents behind: the next sync, or the next removal of the group, settles
them from what the gateway reports (``settle_leftovers``). Either way each
intent ends as exactly one outcome, and an intent is never shown as one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from removal.directory.members import resolve_ids
from removal.directory.queue import record_batch, record_history
from removal.directory.shapes import MemberIn
from workers.db import Database

# What a settled intent records when the gateway answered nothing for it.
NO_ANSWER = "no answer from the gateway"
# A gateway's answer for a member the group did not have: not a failure, the
# member is out; recorded as SUCCESS with this reason.
ALREADY_GONE = "already gone: not in the group"


@dataclass(frozen=True, slots=True)
class Settled:
    removed: dict[str, str]  # whatsapp id -> reason recorded with SUCCESS
    failed: dict[str, str]  # whatsapp id -> reason recorded with FAILURE


def write_intents(
    db: Database,
    group_wa_id: str,
    reasons: Mapping[str, str],
    *,
    job_id: str,
    attempt: int,
    now_ms: int,
) -> dict[str, str]:
    """Journal PENDING intents, in the caller's transaction; returns those written.

    A member that already has an intent (another run's, not settled yet) is
    left out: its removal may be in flight, and it stays queued.
    """
    written: dict[str, str] = {}
    for wid, reason in reasons.items():
        if db.execute(
            "INSERT INTO removal_intents (group_wa_id, whatsapp_id, job_id, attempt, reason, at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (group_wa_id, whatsapp_id) DO NOTHING",
            (group_wa_id, wid, job_id, attempt, reason, now_ms),
        ):
            written[wid] = reason
    return written


def settle(
    db: Database,
    group_wa_id: str,
    reasons: Mapping[str, str],
    answers: Mapping[str, str | None],
    *,
    job_id: str,
    attempt: int,
    now_ms: int,
) -> Settled:
    """Turn this run's intents into outcome rows from the gateway's answers; caller's transaction.

    An intent no longer there was settled by someone else (the run was
    rescued meanwhile) and is left to that settlement: one outcome each.
    """
    removed: dict[str, str] = {}
    failed: dict[str, str] = {}
    for wid, reason in reasons.items():
        if not db.execute(
            "DELETE FROM removal_intents WHERE group_wa_id = ? AND whatsapp_id = ?"
            " AND job_id = ? AND attempt = ?",
            (group_wa_id, wid, job_id, attempt),
        ):
            continue
        answer = answers.get(wid, NO_ANSWER)
        if answer is None:
            removed[wid] = reason
        elif answer == ALREADY_GONE:
            removed[wid] = ALREADY_GONE
        else:
            failed[wid] = answer
    record_batch(
        db,
        group_wa_id,
        removed=removed,
        failed=failed,
        skipped=(),
        job_id=job_id,
        now_ms=now_ms,
        attempt=attempt,
    )
    return Settled(removed, failed)


def fail(
    db: Database,
    group_wa_id: str,
    reasons: Mapping[str, str],
    why: str,
    *,
    job_id: str,
    attempt: int,
    now_ms: int,
) -> list[str]:
    """A whole call that failed and did nothing: this run's intents become FAILURE rows.

    The members stay queued (a later removal tries them again). Caller's
    transaction; returns those recorded.
    """
    failed: list[str] = []
    for wid in reasons:
        if db.execute(
            "DELETE FROM removal_intents WHERE group_wa_id = ? AND whatsapp_id = ?"
            " AND job_id = ? AND attempt = ?",
            (group_wa_id, wid, job_id, attempt),
        ):
            failed.append(wid)
    record_history(db, group_wa_id, "FAILURE", dict.fromkeys(failed, why), job_id, now_ms, attempt)
    return failed


def pending(db: Database, group_wa_id: str) -> dict[str, tuple[str, int, str]]:
    """The group's unsettled intents: whatsapp id -> (job id, attempt, reason)."""
    rows = db.query(
        "SELECT whatsapp_id, job_id, attempt, reason FROM removal_intents WHERE group_wa_id = ?",
        (group_wa_id,),
    )
    return {wid: (job, attempt, reason) for wid, job, attempt, reason in rows}


def settle_leftovers(
    db: Database, group_wa_id: str, members: list[MemberIn], now_ms: int
) -> Settled:
    """Settle the intents runs left behind, from the gateway's member list; caller's transaction.

    Gone from the group: the removal happened, so it is recorded as the
    intent's job's SUCCESS. Still there: it did not, and nothing is recorded;
    the intent is dropped and the member stays queued for this run.
    """
    listed = [m.whatsapp_id for m in members]
    listed.extend(m.alt_id for m in members if m.alt_id is not None)
    present = set(resolve_ids(db, group_wa_id, listed).values())  # members' keys
    gone: dict[tuple[str, int], dict[str, str]] = {}  # (job, attempt) -> whatsapp id -> reason
    leftovers = pending(db, group_wa_id)
    for wid, (job_id, attempt, reason) in leftovers.items():
        if wid not in present:
            gone.setdefault((job_id, attempt), {})[wid] = reason
    db.execute("DELETE FROM removal_intents WHERE group_wa_id = ?", (group_wa_id,))
    for (job_id, attempt), removed in gone.items():
        record_batch(
            db,
            group_wa_id,
            removed=removed,
            failed={},
            skipped=(),
            job_id=job_id,
            now_ms=now_ms,
            attempt=attempt,
        )
    return Settled({w: r for removed in gone.values() for w, r in removed.items()}, {})
