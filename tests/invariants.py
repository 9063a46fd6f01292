"""The removal invariants, checked over a database after a test has hurt the system.

Reusable by any test (process-level, chaos): it needs only a database URL
and imports nothing from other test modules.

- Every removed member has exactly one SUCCESS history row, and no present
  member has one (the history equals what was done).
- Every queued member is still a member.
- Every unsettled intent of a remote gateway's journal is a present member's
  (a removal is recorded in the same transaction that settles its intent).

Assumption: members leave their groups only by removal during the test (no
group re-listed without them, nobody re-listed after a removal), so a
removed member without a SUCCESS row is a removal without a trace.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from workers.db import Database, connect


@dataclass(frozen=True, slots=True)
class RemovalCounts:
    """What the database holds, for the tests' own assertions after the check."""

    present: int  # members not removed
    removed: int  # members removed (each with exactly one SUCCESS row)
    queued: int
    success_rows: int
    failure_rows: int
    intents: int  # unsettled intents of a remote gateway's journal


def assert_removal_invariants(database_url: str, groups: list[str] | None = None) -> RemovalCounts:
    """Assert the removal invariants over ``groups`` (default: every group); returns counts.

    Raises ``AssertionError`` naming the first members that break one.
    """
    db = connect(database_url)
    try:
        where, params = _scope(groups)
        _begin_snapshot(db)  # one consistent view, even while jobs are running
        members = db.query(
            f"SELECT group_wa_id, whatsapp_id, removed_at IS NULL FROM wa_members{where}", params
        )
        history = db.query(
            f"SELECT group_wa_id, whatsapp_id, outcome FROM removal_history{where}", params
        )
        queued = db.query(f"SELECT group_wa_id, whatsapp_id FROM removal_queue{where}", params)
        intents = db.query(f"SELECT group_wa_id, whatsapp_id FROM removal_intents{where}", params)
        db.execute("ROLLBACK")
    finally:
        db.close()

    present = {(g, w) for g, w, here in members if here}
    removed = {(g, w) for g, w, here in members if not here}
    successes = Counter((g, w) for g, w, outcome in history if outcome == "SUCCESS")
    _none("removed members without exactly one SUCCESS row",
          sorted(m for m in removed if successes[m] != 1))  # fmt: skip
    _none("present members with a SUCCESS row", sorted(m for m in present if successes[m]))
    _none("SUCCESS rows for unknown members", sorted(set(successes) - present - removed))
    _none("queued members who are no longer members",
          sorted((g, w) for g, w in queued if (g, w) not in present))  # fmt: skip
    _none("intents of members no longer present",
          sorted((g, w) for g, w in intents if (g, w) not in present))  # fmt: skip
    return RemovalCounts(
        present=len(present),
        removed=len(removed),
        queued=len(queued),
        success_rows=sum(successes.values()),
        failure_rows=sum(1 for *_, outcome in history if outcome == "FAILURE"),
        intents=len(intents),
    )


def _begin_snapshot(db: Database) -> None:
    # A read transaction: SQLite (WAL) reads one snapshot from its first
    # read on; PostgreSQL needs REPEATABLE READ for the same.
    if db.dialect == "postgresql":
        db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    else:
        db.execute("BEGIN")


def _scope(groups: list[str] | None) -> tuple[str, tuple[str, ...]]:
    if groups is None:
        return "", ()
    if not groups:
        return " WHERE 1 = 0", ()
    return f" WHERE group_wa_id IN ({', '.join('?' * len(groups))})", tuple(groups)


def _none(what: str, offenders: list[tuple[str, str]]) -> None:
    assert not offenders, f"{len(offenders)} {what}: {offenders[:10]}"
