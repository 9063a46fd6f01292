"""Facts about members from outside a sync: webhook deliveries and imports.

A ``Seen`` fact says a member was, or was no longer, in a group at a time,
and maybe that they wrote then. Facts may arrive twice, late or out of
order (a gateway retries its deliveries), so applying one is idempotent and
order-safe:

- ``last_active_at`` only moves forward (the greatest activity seen);
- a membership fact older than the member's ``membership_at`` (the time of
  the newest membership fact applied: a sync, a webhook, a removal, an
  import) changes no membership; a newer one applies and becomes it.

Every writer runs in one transaction: a batch is applied whole or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from removal.directory.members import IN_CHUNK
from workers.db import Database


@dataclass(frozen=True, slots=True)
class Seen:
    """Member ``whatsapp_id`` (or its ``alt_id``) was in ``group_wa_id`` at ``at`` (or had left).

    ``is_admin`` None leaves the admin flag as it is (a new member is not an
    admin). ``active_at``: when they last wrote, if known. ``joined_at``: a
    known join time (imports), else a new or returning member joined at
    ``at``. ``restate`` (imports): the admin flag and join time apply to a
    current member even when the fact is older than its ``membership_at``;
    membership itself still follows the order. A removal of someone never
    seen is recorded too, so that a late "add" cannot bring them in.
    ``membership`` False (a message): for a known member, only the activity
    counts; membership changes come from membership events and refreshes
    only, so a message stamped by a clock ahead cannot undo a removal.
    """

    group_wa_id: str
    whatsapp_id: str
    at: int
    alt_id: str | None = None
    present: bool = True
    is_admin: bool | None = None
    active_at: int | None = None
    joined_at: int | None = None
    restate: bool = False
    membership: bool = True


@dataclass(frozen=True, slots=True)
class GroupSeen:
    """A group's full metadata at ``at``: its name and every participant (``groups.upsert``).

    The group is created if unknown; known members not listed had left by ``at``.
    """

    group_wa_id: str
    name: str
    at: int
    members: tuple[Seen, ...]


@dataclass(frozen=True, slots=True)
class Activity:
    """An imported activity: ``whatsapp_id`` (either id) wrote in ``group_wa_id`` at ``at``."""

    group_wa_id: str
    whatsapp_id: str
    at: int


Fact = Seen | GroupSeen


def known_groups(db: Database, group_ids: Iterable[str]) -> set[str]:
    wanted = list(dict.fromkeys(group_ids))
    found: set[str] = set()
    for start in range(0, len(wanted), IN_CHUNK):
        chunk = wanted[start : start + IN_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = db.query(
            f"SELECT group_wa_id FROM wa_groups WHERE group_wa_id IN ({marks})",
            tuple(chunk),
        )
        found.update(gid for (gid,) in rows)
    return found


def apply_facts(db: Database, batches: Sequence[Sequence[Fact]], now_ms: int) -> list[int]:
    """Apply each batch's facts in one transaction; returns how many facts of each batch applied.

    A fact about a group the directory does not know is skipped (jobsup does
    not manage that group), except ``GroupSeen``, which creates it.
    """
    with db.transaction():
        groups = known_groups(
            db, (f.group_wa_id for batch in batches for f in batch if isinstance(f, Seen))
        )
        counts = []
        for batch in batches:
            applied = 0
            for fact in batch:
                if isinstance(fact, GroupSeen):
                    _apply_group(db, fact, now_ms)
                    groups.add(fact.group_wa_id)
                    applied += 1
                elif fact.group_wa_id in groups:
                    _apply_seen(db, fact)
                    applied += 1
            counts.append(applied)
    return counts


def _find(db: Database, group_wa_id: str, ids: Sequence[str]) -> tuple[Any, ...] | None:
    """The member known by any of ``ids`` (either column), or None."""
    marks = ", ".join("?" * len(ids))
    return db.one(
        "SELECT whatsapp_id, alt_id, removed_at, membership_at, last_active_at"
        f" FROM wa_members WHERE group_wa_id = ?"
        f" AND (whatsapp_id IN ({marks}) OR alt_id IN ({marks}))",
        (group_wa_id, *ids, *ids),
    )


def _apply_seen(db: Database, fact: Seen) -> None:
    ids = [fact.whatsapp_id]
    if fact.alt_id is not None and fact.alt_id != fact.whatsapp_id:
        ids.append(fact.alt_id)
    row = _find(db, fact.group_wa_id, ids)
    if row is None:
        joined = fact.joined_at if fact.joined_at is not None else fact.at
        db.execute(
            "INSERT INTO wa_members (group_wa_id, whatsapp_id, alt_id, is_admin, joined_at,"
            " last_active_at, removed_at, membership_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                fact.group_wa_id,
                fact.whatsapp_id,
                None if len(ids) == 1 else fact.alt_id,
                bool(fact.is_admin) and fact.present,
                joined,
                fact.active_at,
                None if fact.present else fact.at,
                fact.at,
            ),
        )
        return
    key, alt, removed_at, membership_at, last_active = row
    other = next((i for i in ids if i != key), None)
    sets: list[str] = []
    params: list[Any] = []
    if alt is None and other is not None:
        sets.append("alt_id = ?")
        params.append(other)
    new_active = last_active
    if fact.membership and (membership_at is None or fact.at > membership_at):
        sets.append("membership_at = ?")
        params.append(fact.at)
        if not fact.present:
            if removed_at is None:
                sets.append("removed_at = ?")
                params.append(fact.at)
        elif removed_at is not None:
            # Back after having left: joined now; what they wrote before no longer counts.
            sets.append("removed_at = NULL")
            sets.append("joined_at = ?")
            params.append(fact.joined_at if fact.joined_at is not None else fact.at)
            sets.append("is_admin = ?")
            params.append(bool(fact.is_admin))
            if last_active is not None and last_active < fact.at:
                new_active = None
        else:
            _restate(fact, sets, params)
    elif fact.restate and fact.present and removed_at is None:
        _restate(fact, sets, params)
    if fact.active_at is not None and (new_active is None or fact.active_at > new_active):
        new_active = fact.active_at
    if new_active != last_active:
        sets.append("last_active_at = ?")
        params.append(new_active)
    if sets:
        db.execute(
            f"UPDATE wa_members SET {', '.join(sets)} WHERE group_wa_id = ? AND whatsapp_id = ?",
            (*params, fact.group_wa_id, key),
        )


def _restate(fact: Seen, sets: list[str], params: list[Any]) -> None:
    if fact.is_admin is not None:
        sets.append("is_admin = ?")
        params.append(fact.is_admin)
    if fact.joined_at is not None:
        sets.append("joined_at = ?")
        params.append(fact.joined_at)


def _apply_group(db: Database, fact: GroupSeen, now_ms: int) -> None:
    db.execute(
        "INSERT INTO wa_groups (group_wa_id, name, created_at, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (group_wa_id) DO UPDATE SET name = excluded.name,"
        " updated_at = excluded.updated_at",
        (fact.group_wa_id, fact.name, now_ms, now_ms),
    )
    listed: set[str] = set()
    for member in fact.members:
        _apply_seen(db, member)
        listed.add(member.whatsapp_id)
        if member.alt_id is not None:
            listed.add(member.alt_id)
    current = db.query(
        "SELECT whatsapp_id, alt_id FROM wa_members WHERE group_wa_id = ? AND removed_at IS NULL",
        (fact.group_wa_id,),
    )
    for key, alt in current:
        if key not in listed and (alt is None or alt not in listed):
            _apply_seen(db, Seen(fact.group_wa_id, key, fact.at, present=False))


def import_activity(db: Database, rows: Sequence[Activity]) -> list[str | None]:
    """Move each member's last activity forward, in one transaction.

    Returns, per row, None when applied, or why not (unknown group or member).
    Membership is not touched: an exported chat holds people who have left since.
    """
    with db.transaction():
        groups = known_groups(db, (r.group_wa_id for r in rows))
        outcomes: list[str | None] = []
        for row in rows:
            if row.group_wa_id not in groups:
                outcomes.append(f"no group {row.group_wa_id!r}")
                continue
            found = _find(db, row.group_wa_id, [row.whatsapp_id])
            if found is None:
                outcomes.append(f"no member {row.whatsapp_id!r} in group {row.group_wa_id!r}")
                continue
            db.execute(
                "UPDATE wa_members SET last_active_at = ? WHERE group_wa_id = ?"
                " AND whatsapp_id = ? AND (last_active_at IS NULL OR last_active_at < ?)",
                (row.at, row.group_wa_id, found[0], row.at),
            )
            outcomes.append(None)
    return outcomes


def import_members(db: Database, group_wa_id: str, rows: Sequence[Seen], now_ms: int) -> None:
    """Merge ``rows`` into the group's members (creating the group if unknown), in one transaction.

    Unlike a sync, members not listed are left as they are.
    """
    with db.transaction():
        db.execute(
            "INSERT INTO wa_groups (group_wa_id, name, created_at, updated_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (group_wa_id) DO NOTHING",
            (group_wa_id, group_wa_id, now_ms, now_ms),
        )
        for row in rows:
            _apply_seen(db, row)
