"""Groups, their current members and whitelists, and the inactivity rule.

Every public writer runs in one transaction; helpers documented as "in the
caller's transaction" let the removal jobs combine steps atomically.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from removal.directory.shapes import (
    GroupIn,
    GroupSummary,
    MemberIn,
    MemberView,
    from_ms,
    opt_from_ms,
    to_ms,
)
from workers.db import Database

# Whether member ``m`` is whitelisted: an entry may name either of its ids.
WHITELISTED_SQL = (
    "EXISTS (SELECT 1 FROM wa_whitelist w WHERE w.group_wa_id = m.group_wa_id"
    " AND w.whatsapp_id IN (m.whatsapp_id, m.alt_id))"
)

# The inactivity rule, shared by the counts, the queueing and the re-check at
# removal time (is_inactive); parameters: group id, now_ms - window_ms.
INACTIVE_MEMBER_SQL = (
    "m.group_wa_id = ? AND m.removed_at IS NULL AND NOT m.is_admin"
    " AND coalesce(m.last_active_at, m.joined_at) < ?"
    f" AND NOT {WHITELISTED_SQL}"
)


# Keeps ``IN (...)`` lists well under SQLite's bound-parameter limit.
IN_CHUNK = 500


class UnknownGroup(LookupError):
    """The group is not in the directory."""


def is_inactive(last_seen_ms: int, window_ms: int, now_ms: int) -> bool:
    """``last_seen_ms`` is the last activity, or the join time if never active."""
    return last_seen_ms < now_ms - window_ms


def resolve_ids(db: Database, group_wa_id: str, ids: Iterable[str]) -> dict[str, str]:
    """Each of ``ids`` the group knows, by either of a member's ids -> the member's key.

    The key is ``wa_members.whatsapp_id``, the id the queue, the intents and
    the history use. Members who left are included (their key still names them).
    """
    wanted = list(dict.fromkeys(ids))
    keys: dict[str, str] = {}
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start : start + IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = db.query(
            "SELECT whatsapp_id, alt_id FROM wa_members WHERE group_wa_id = ?"
            f" AND (whatsapp_id IN ({marks}) OR alt_id IN ({marks}))",
            (group_wa_id, *chunk, *chunk),
        )
        for key, alt in rows:
            keys[key] = key
            if alt is not None:
                keys.setdefault(alt, key)
    return {wid: keys[wid] for wid in wanted if wid in keys}


def first_seen(db: Database, group_wa_id: str, members: list[MemberIn]) -> list[MemberIn]:
    """Members as a gateway lists them, each current one with the join time we first saw.

    A gateway that knows no join times lists everyone as joining now; a
    member already in the group keeps the time it was first seen.
    """
    keys = resolve_ids(db, group_wa_id, _all_ids(members))
    joined: dict[str, int] = {}
    wanted = sorted(set(keys.values()))
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start : start + IN_CHUNK]
        rows = db.query(
            "SELECT whatsapp_id, joined_at FROM wa_members WHERE group_wa_id = ?"
            f" AND removed_at IS NULL AND whatsapp_id IN ({', '.join('?' * len(chunk))})",
            (group_wa_id, *chunk),
        )
        joined.update((wid, int(at)) for wid, at in rows)
    kept: list[MemberIn] = []
    for m in members:
        key = keys.get(m.whatsapp_id) or keys.get(m.alt_id or "")
        if key in joined:
            m = msgspec.structs.replace(m, joined_at=from_ms(joined[key]))
        kept.append(m)
    return kept


def group_exists(db: Database, group_wa_id: str) -> bool:
    return db.one("SELECT 1 FROM wa_groups WHERE group_wa_id = ?", (group_wa_id,)) is not None


def upsert_group(
    db: Database,
    group_wa_id: str,
    group: GroupIn,
    now_ms: int,
    window_ms: int | None = None,
) -> GroupSummary:
    """Create or rename the group and make ``group.members`` its current members."""
    with db.transaction():
        db.execute(
            "INSERT INTO wa_groups (group_wa_id, name, created_at, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (group_wa_id)"
            " DO UPDATE SET name = excluded.name, updated_at = excluded.updated_at",
            (group_wa_id, group.name, now_ms, now_ms),
        )
        put_members(db, group_wa_id, group.members, now_ms)
        summary = _summary(db, group_wa_id, window_ms, now_ms)
    assert summary is not None  # written just above
    return summary


# Last activity is an observed fact: a listing that omits it (or reports an
# older one) must not make a member look inactive, unless the member is
# coming back after having left, when the old activity no longer counts.
_UPSERT_MEMBER = """
INSERT INTO wa_members
    (group_wa_id, whatsapp_id, alt_id, is_admin, joined_at, last_active_at, membership_at)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (group_wa_id, whatsapp_id) DO UPDATE SET
    alt_id = coalesce(excluded.alt_id, wa_members.alt_id),
    membership_at = excluded.membership_at,
    is_admin = excluded.is_admin,
    joined_at = excluded.joined_at,
    last_active_at = CASE
        WHEN wa_members.removed_at IS NOT NULL THEN excluded.last_active_at
        WHEN wa_members.last_active_at IS NULL THEN excluded.last_active_at
        WHEN excluded.last_active_at > wa_members.last_active_at
            THEN excluded.last_active_at
        ELSE wa_members.last_active_at END,
    removed_at = NULL
"""


def put_members(db: Database, group_wa_id: str, members: list[MemberIn], now_ms: int) -> None:
    """Make ``members`` the group's current members, in the caller's transaction.

    A listed member is matched to a known one by either of its ids (a group
    that switched between phone ids and LIDs keeps its members), and its
    other id is filled in. Members absent from the list left the group: they
    are marked removed, with no history row (nobody removed them).
    """
    known = resolve_ids(db, group_wa_id, _all_ids(members))
    listed: set[str] = set()
    seen: set[str] = set()
    rows = []
    for m in members:
        key = known.get(m.whatsapp_id) or known.get(m.alt_id or "") or m.whatsapp_id
        ids = {m.whatsapp_id, key} | ({m.alt_id} if m.alt_id else set())
        if key in listed or ids & seen:
            raise ValueError(f"duplicate whatsappId {m.whatsapp_id!r}")
        listed.add(key)
        seen |= ids
        other = m.alt_id if key == m.whatsapp_id else m.whatsapp_id
        joined = to_ms(m.joined_at)
        active = None if m.last_active_at is None else to_ms(m.last_active_at)
        rows.append((group_wa_id, key, other, m.is_admin, joined, active, now_ms))
    db.executemany(_UPSERT_MEMBER, rows)
    current = db.query(
        "SELECT whatsapp_id FROM wa_members WHERE group_wa_id = ? AND removed_at IS NULL",
        (group_wa_id,),
    )
    mark_removed(db, group_wa_id, [wid for (wid,) in current if wid not in listed], now_ms)


def _all_ids(members: list[MemberIn]) -> list[str]:
    ids = [m.whatsapp_id for m in members]
    ids.extend(m.alt_id for m in members if m.alt_id is not None)
    return ids


def mark_removed(
    db: Database, group_wa_id: str, whatsapp_ids: Iterable[str], now_ms: int
) -> set[str]:
    """Mark current members removed, in the caller's transaction; returns those marked.

    A few statements per batch, not one per member: a batch of thousands is
    one transaction, and on PostgreSQL each statement is a round trip.
    """
    ids = list(whatsapp_ids)
    marked: set[str] = set()
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        rows = db.query(
            "UPDATE wa_members SET removed_at = ?, membership_at = ?"
            " WHERE group_wa_id = ? AND removed_at IS NULL"
            f" AND whatsapp_id IN ({', '.join('?' * len(chunk))}) RETURNING whatsapp_id",
            (now_ms, now_ms, group_wa_id, *chunk),
        )
        marked.update(wid for (wid,) in rows)
    return marked


def group_summary(
    db: Database, group_wa_id: str, window_ms: int, now_ms: int
) -> GroupSummary | None:
    return _summary(db, group_wa_id, window_ms, now_ms)


def _summary(
    db: Database, group_wa_id: str, window_ms: int | None, now_ms: int
) -> GroupSummary | None:
    row = db.one(
        "SELECT g.name, g.created_at, g.updated_at,"
        " (SELECT count(*) FROM wa_members m"
        "  WHERE m.group_wa_id = g.group_wa_id AND m.removed_at IS NULL),"
        " (SELECT count(*) FROM wa_members m"
        "  WHERE m.group_wa_id = g.group_wa_id AND m.removed_at IS NULL AND m.is_admin),"
        " (SELECT count(*) FROM wa_whitelist w WHERE w.group_wa_id = g.group_wa_id),"
        " (SELECT count(*) FROM removal_queue q WHERE q.group_wa_id = g.group_wa_id),"
        " (SELECT count(*) FROM removal_history h"
        "  WHERE h.group_wa_id = g.group_wa_id AND h.outcome = 'SUCCESS')"
        " FROM wa_groups g WHERE g.group_wa_id = ?",
        (group_wa_id,),
    )
    if row is None:
        return None
    name, created, updated, members, admins, whitelisted, queued, removed = row
    inactive = None if window_ms is None else count_inactive(db, group_wa_id, window_ms, now_ms)
    return GroupSummary(
        group_wa_id=group_wa_id,
        name=name,
        member_count=int(members),
        admin_count=int(admins),
        whitelist_count=int(whitelisted),
        inactive_count=inactive,
        queued_count=int(queued),
        removed_count=int(removed),
        created_at=from_ms(created),
        updated_at=from_ms(updated),
    )


def count_inactive(db: Database, group_wa_id: str, window_ms: int, now_ms: int) -> int:
    row = db.one(
        f"SELECT count(*) FROM wa_members m WHERE {INACTIVE_MEMBER_SQL}",
        (group_wa_id, now_ms - window_ms),
    )
    return int(row[0]) if row else 0


def by_code_point(db: Database) -> str:
    """The collation that sorts text by code point, as SQLite does and Python sorts."""
    return ' COLLATE "C"' if db.dialect == "postgresql" else ""


def list_members(
    db: Database,
    group_wa_id: str,
    include_removed: bool = False,
    after: str | None = None,
    limit: int | None = None,
) -> list[MemberView]:
    """Sorted by whatsappId; with ``limit``, that many from the first id after ``after``."""
    page = ""
    params: tuple[object, ...] = (group_wa_id,)
    if after is not None:
        page += f" AND m.whatsapp_id{by_code_point(db)} > ?"
        params += (after,)
    if limit is not None:
        page += f" ORDER BY m.whatsapp_id{by_code_point(db)} LIMIT ?"
        params += (limit,)
    rows = db.query(
        "SELECT m.whatsapp_id, m.alt_id, m.is_admin, m.joined_at, m.last_active_at,"
        f" m.removed_at, {WHITELISTED_SQL},"
        " EXISTS (SELECT 1 FROM removal_queue q"
        "  WHERE q.group_wa_id = m.group_wa_id AND q.whatsapp_id = m.whatsapp_id)"
        " FROM wa_members m WHERE m.group_wa_id = ?"
        + ("" if include_removed else " AND m.removed_at IS NULL")
        + page,
        params,
    )
    # Sorted here: PostgreSQL's ORDER BY follows the database's collation.
    rows.sort(key=lambda row: row[0])
    return [
        MemberView(
            whatsapp_id=wid,
            alt_id=msgspec.UNSET if alt is None else alt,
            is_admin=bool(admin),
            joined_at=from_ms(joined),
            last_active_at=opt_from_ms(active),
            removed_at=opt_from_ms(removed),
            whitelisted=bool(whitelisted),
            queued=bool(queued),
        )
        for wid, alt, admin, joined, active, removed, whitelisted, queued in rows
    ]


def set_whitelist(db: Database, group_wa_id: str, whatsapp_ids: Iterable[str]) -> list[str]:
    """Replace the group's whitelist; raises UnknownGroup."""
    ids = sorted(set(whatsapp_ids))
    with db.transaction():
        if not group_exists(db, group_wa_id):
            raise UnknownGroup(group_wa_id)
        db.execute("DELETE FROM wa_whitelist WHERE group_wa_id = ?", (group_wa_id,))
        db.executemany(
            "INSERT INTO wa_whitelist (group_wa_id, whatsapp_id) VALUES (?, ?)",
            [(group_wa_id, wid) for wid in ids],
        )
    return ids
