"""The access tables: the server's own secrets and the audit trail.

``secrets`` holds what every instance must share and a restart must keep:
the generated admin token's SHA-256 (never the token) and the key that
signs session cookies. ``audit`` is the trail ``GET /admin/audit`` reads,
newest first by its time-ordered id.
"""

from __future__ import annotations

from typing import Any

from supervisor.audit import AuditEntry, AuditFilter
from workers.db import Database
from workers.times import from_ms, to_ms

MIGRATIONS = [
    (
        1,
        """
        CREATE TABLE secrets (
            name TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            created_at BIGINT NOT NULL
        );
        CREATE TABLE audit (
            id TEXT PRIMARY KEY,
            at BIGINT NOT NULL,
            who TEXT NOT NULL,
            role TEXT,
            fingerprint TEXT,
            peer TEXT,
            action TEXT NOT NULL,
            target TEXT,
            outcome INTEGER NOT NULL
        );
        CREATE INDEX audit_at ON audit (at);
        CREATE INDEX audit_action ON audit (action, id);
        CREATE INDEX audit_who ON audit (who, id)
        """,
    ),
]

ADMIN_TOKEN = "admin_token_sha256"
SESSION_KEY = "session_key"

_COLUMNS = "id, at, who, role, fingerprint, peer, action, target, outcome"


def take_secret(db: Database, name: str, candidate: str, now_ms: int) -> tuple[str, bool]:
    """The stored secret ``name``; ``candidate`` is stored first if there is none.

    Returns the value and whether it is ``candidate`` (this call stored it):
    of several instances starting together, exactly one stores its own.
    """
    with db.transaction():
        inserted = db.execute(
            "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO NOTHING",
            (name, candidate, now_ms),
        )
        row = db.one("SELECT value FROM secrets WHERE name = ?", (name,))
    assert row is not None
    return str(row[0]), inserted == 1


def replace_secret(db: Database, name: str, value: str, now_ms: int) -> None:
    with db.transaction():
        db.execute("DELETE FROM secrets WHERE name = ?", (name,))
        db.execute(
            "INSERT INTO secrets (name, value, created_at) VALUES (?, ?, ?)", (name, value, now_ms)
        )


def insert_audit(db: Database, entry: AuditEntry) -> None:
    db.execute(
        f"INSERT INTO audit ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            entry.id,
            to_ms(entry.at),
            entry.who,
            entry.role,
            entry.fingerprint,
            entry.peer,
            entry.action,
            entry.target,
            entry.outcome,
        ),
    )


def _entry(row: tuple[Any, ...]) -> AuditEntry:
    id_, at, who, role, fingerprint, peer, action, target, outcome = row
    return AuditEntry(id_, from_ms(at), who, role, fingerprint, peer, action, target, outcome)


def list_audit(db: Database, f: AuditFilter) -> list[AuditEntry]:
    """Newest first, up to ``f.limit + 1`` entries (the extra one: there is more)."""
    where: list[str] = []
    params: list[Any] = []
    if f.action is not None:
        where.append("action = ?")
        params.append(f.action)
    if f.who is not None:
        where.append("(who = ? OR fingerprint = ?)")
        params += [f.who, f.who]
    if f.since is not None:
        where.append("at >= ?")
        params.append(to_ms(f.since))
    if f.until is not None:
        where.append("at < ?")
        params.append(to_ms(f.until))
    if f.before is not None:
        where.append("id < ?")
        params.append(f.before)
    sql = f"SELECT {_COLUMNS} FROM audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC LIMIT ?"
    return [_entry(r) for r in db.query(sql, (*params, f.limit + 1))]


def prune_audit(db: Database, cutoff_ms: int) -> int:
    return db.execute("DELETE FROM audit WHERE at < ?", (cutoff_ms,))
