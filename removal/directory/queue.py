"""The removal queue: who waits to be removed, and whether they still should be.

A member is queued with the inactivity window that condemned them and is
checked again, against that window, right before removal: between queueing
and removal a member may have left, become an admin, been whitelisted or
spoken again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

from removal.directory.members import (
    IN_CHUNK,
    INACTIVE_MEMBER_SQL,
    WHITELISTED_SQL,
    is_inactive,
    mark_removed,
    put_members,
)
from removal.directory.shapes import MemberIn
from workers.db import Database


@dataclass(frozen=True, slots=True)
class QueueEntry:
    whatsapp_id: str
    queued_at: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class Verdicts:
    removable: dict[str, int]  # whatsapp id -> how long inactive (ms), in queue order
    skipped: dict[str, str]  # whatsapp id -> why it no longer qualifies

    def only(self, entries: Sequence[QueueEntry]) -> Verdicts:
        ids = [e.whatsapp_id for e in entries]
        return Verdicts(
            {wid: self.removable[wid] for wid in ids if wid in self.removable},
            {wid: self.skipped[wid] for wid in ids if wid in self.skipped},
        )


class _MemberState(NamedTuple):
    current: bool
    admin: bool
    whitelisted: bool
    last_seen_ms: int  # last activity, or the join time if never active


@dataclass(frozen=True, slots=True)
class Plan:
    """What a dry run would do: the queue it would walk and each member's fate."""

    entries: list[QueueEntry]
    verdicts: Verdicts
    queued: int


class _RollBack(Exception):
    pass


@contextmanager
def _rolled_back(db: Database) -> Iterator[Database]:
    # A dry run takes the very same steps as a real one, then throws them away.
    try:
        with db.transaction():
            yield db
            raise _RollBack
    except _RollBack:
        pass


def queue_inactive(
    db: Database, group_wa_id: str, window_ms: int, now_ms: int, job_id: str | None
) -> int:
    """Queue inactive members not queued yet, in the caller's transaction; returns how many."""
    return db.execute(
        "INSERT INTO removal_queue (group_wa_id, whatsapp_id, queued_at, window_ms, job_id)"
        " SELECT m.group_wa_id, m.whatsapp_id, ?, ?, ? FROM wa_members m"
        f" WHERE {INACTIVE_MEMBER_SQL}"
        " ON CONFLICT (group_wa_id, whatsapp_id) DO NOTHING",
        (now_ms, window_ms, job_id, group_wa_id, now_ms - window_ms),
    )


def queue_pinned(
    db: Database,
    group_wa_id: str,
    whatsapp_ids: Sequence[str],
    window_ms: int,
    now_ms: int,
    job_id: str | None,
) -> int:
    """Queue these members of the group (not queued yet), in the caller's transaction."""
    inserted = 0
    for start in range(0, len(whatsapp_ids), IN_CHUNK):
        chunk = list(whatsapp_ids[start : start + IN_CHUNK])
        inserted += db.execute(
            "INSERT INTO removal_queue (group_wa_id, whatsapp_id, queued_at, window_ms, job_id)"
            " SELECT m.group_wa_id, m.whatsapp_id, ?, ?, ? FROM wa_members m"
            f" WHERE m.group_wa_id = ? AND m.whatsapp_id IN ({', '.join('?' * len(chunk))})"
            " ON CONFLICT (group_wa_id, whatsapp_id) DO NOTHING",
            (now_ms, window_ms, job_id, group_wa_id, *chunk),
        )
    return inserted


def sync(
    db: Database,
    group_wa_id: str,
    fetched: list[MemberIn] | None,
    window_ms: int,
    now_ms: int,
    job_id: str | None,
    only: Sequence[str] | None = None,
) -> int:
    """Apply the gateway's member list (if any) and queue the inactive, in the caller's
    transaction; returns how many the job has queued.

    With ``only`` (a plan's pinned members), those are queued instead,
    whatever their state: each is checked again before removal, and
    nobody else is queued.

    A job run again from its start (its instance died before it stored its
    place) finds its members already queued, by itself: they count, as do
    those its earlier run processed (their history rows), so the count is
    the job's, not this run's insert.
    """
    if fetched is not None:
        put_members(db, group_wa_id, fetched, now_ms)
    if only is None:
        inserted = queue_inactive(db, group_wa_id, window_ms, now_ms, job_id)
    else:
        inserted = queue_pinned(db, group_wa_id, only, window_ms, now_ms, job_id)
    if job_id is None:
        return inserted
    row = db.one(
        "SELECT count(*) FROM (SELECT whatsapp_id FROM removal_queue"
        " WHERE group_wa_id = ? AND job_id = ? UNION SELECT whatsapp_id FROM removal_history"
        " WHERE group_wa_id = ? AND job_id = ?) mine",
        (group_wa_id, job_id, group_wa_id, job_id),
    )
    return int(row[0]) if row is not None else inserted


def read_queue(db: Database, group_wa_id: str) -> list[QueueEntry]:
    rows = db.query(
        "SELECT whatsapp_id, queued_at, window_ms FROM removal_queue WHERE group_wa_id = ?",
        (group_wa_id,),
    )
    # Sorted here: PostgreSQL's ORDER BY follows the database's collation.
    entries = [QueueEntry(wid, int(at), int(window)) for wid, at, window in rows]
    entries.sort(key=lambda e: (e.queued_at, e.whatsapp_id))
    return entries


def _member_states(
    db: Database, group_wa_id: str, whatsapp_ids: list[str]
) -> dict[str, _MemberState]:
    states: dict[str, _MemberState] = {}
    for start in range(0, len(whatsapp_ids), IN_CHUNK):
        chunk = whatsapp_ids[start : start + IN_CHUNK]
        rows = db.query(
            "SELECT m.whatsapp_id, m.removed_at IS NULL, m.is_admin,"
            f" {WHITELISTED_SQL}, coalesce(m.last_active_at, m.joined_at)"
            " FROM wa_members m WHERE m.group_wa_id = ?"
            f" AND m.whatsapp_id IN ({', '.join('?' * len(chunk))})",
            (group_wa_id, *chunk),
        )
        for wid, current, admin, whitelisted, seen in rows:
            states[wid] = _MemberState(bool(current), bool(admin), bool(whitelisted), int(seen))
    return states


def revalidate(
    db: Database, group_wa_id: str, entries: Sequence[QueueEntry], now_ms: int
) -> Verdicts:
    states = _member_states(db, group_wa_id, [e.whatsapp_id for e in entries])
    removable: dict[str, int] = {}
    skipped: dict[str, str] = {}
    for entry in entries:
        state = states.get(entry.whatsapp_id)
        if state is None or not state.current:
            skipped[entry.whatsapp_id] = "not a member"
        elif state.admin:
            skipped[entry.whatsapp_id] = "admin"
        elif state.whitelisted:
            skipped[entry.whatsapp_id] = "whitelisted"
        elif not is_inactive(state.last_seen_ms, entry.window_ms, now_ms):
            skipped[entry.whatsapp_id] = "active again"
        else:
            removable[entry.whatsapp_id] = now_ms - state.last_seen_ms
    return Verdicts(removable, skipped)


def preview(
    db: Database,
    group_wa_id: str,
    now_ms: int,
    *,
    fetched: list[MemberIn] | None = None,
    window_ms: int | None = None,
    job_id: str | None = None,
) -> Plan:
    """What a removal would do now, after a sync when ``window_ms`` is given; writes nothing."""
    with _rolled_back(db):
        queued = 0
        if window_ms is not None:
            if fetched is not None:
                put_members(db, group_wa_id, fetched, now_ms)
            queued = queue_inactive(db, group_wa_id, window_ms, now_ms, job_id)
        entries = read_queue(db, group_wa_id)
        plan = Plan(entries, revalidate(db, group_wa_id, entries, now_ms), queued)
    return plan


def record_batch(
    db: Database,
    group_wa_id: str,
    *,
    removed: Mapping[str, str],
    failed: Mapping[str, str],
    skipped: Sequence[str],
    job_id: str,
    now_ms: int,
    attempt: int | None = None,
    skip_reasons: Mapping[str, str] | None = None,
) -> None:
    """Dequeue a processed batch and write its history, in the caller's transaction.

    ``skip_reasons`` (a plan's run): the skipped members get a FAILURE row
    too, whose reason says why they were not removed.

    ``removed`` and ``failed`` map whatsapp ids to the reason recorded. The
    caller's transaction is the one that removed them (the local gateway) or
    settles their intents (a remote one), so a removal and its history row
    are one fact.
    """
    db.executemany(
        "DELETE FROM removal_queue WHERE group_wa_id = ? AND whatsapp_id = ?",
        [(group_wa_id, wid) for wid in (*removed, *failed, *skipped)],
    )
    record_history(db, group_wa_id, "SUCCESS", removed, job_id, now_ms, attempt)
    record_history(db, group_wa_id, "FAILURE", failed, job_id, now_ms, attempt)
    if skip_reasons:
        why = {
            wid: f"skipped: {reason} since the plan was reviewed"
            for wid, reason in skip_reasons.items()
        }
        record_history(db, group_wa_id, "FAILURE", why, job_id, now_ms, attempt)
    # Whatever the gateway, our directory must show who is gone.
    mark_removed(db, group_wa_id, removed, now_ms)


def record_history(
    db: Database,
    group_wa_id: str,
    outcome: str,
    reasons: Mapping[str, str],
    job_id: str,
    now_ms: int,
    attempt: int | None = None,
) -> None:
    """One history row per member (with both its ids), in the caller's transaction."""
    db.executemany(
        "INSERT INTO removal_history"
        " (group_wa_id, whatsapp_id, alt_id, outcome, reason, job_id, attempt, at)"
        " VALUES (?, ?, (SELECT alt_id FROM wa_members"
        "  WHERE group_wa_id = ? AND whatsapp_id = ?), ?, ?, ?, ?, ?)",
        [
            (group_wa_id, wid, group_wa_id, wid, outcome, reason, job_id, attempt, now_ms)
            for wid, reason in reasons.items()
        ],
    )
