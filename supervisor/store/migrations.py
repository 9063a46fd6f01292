"""Versioned schema migrations, run at start or by ``jobsup migrate``.

Each component (the job table, a job module's tables) owns an ordered list
of ``(version, sql)``. Applied versions are recorded per component, so a
migration runs exactly once per database. SQL is portable; ``{autoid}``
expands to each dialect's auto-increment primary key.
"""

from __future__ import annotations

from workers.db import Database
from workers.times import now_ms

AUTOID = {
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "postgresql": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
}

Migration = tuple[int, str]


def _statements(script: str, dialect: str) -> list[str]:
    script = script.replace("{autoid}", AUTOID[dialect])
    return [s.strip() for s in script.split(";") if s.strip()]


def _lock(db: Database) -> None:
    # Two instances starting together must not both apply a migration.
    if db.dialect == "postgresql":
        db.execute("SELECT pg_advisory_xact_lock(7312001)")


def migrate(db: Database, components: dict[str, list[Migration]]) -> list[str]:
    """Apply what is missing; returns ``component:version`` for each one applied."""
    applied: list[str] = []
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " component TEXT NOT NULL, version INTEGER NOT NULL, applied_at BIGINT NOT NULL,"
        " PRIMARY KEY (component, version))"
    )
    for component, migrations in components.items():
        for version, script in sorted(migrations):
            with db.transaction():
                _lock(db)
                done = db.one(
                    "SELECT 1 FROM schema_migrations WHERE component = ? AND version = ?",
                    (component, version),
                )
                if done:
                    continue
                for statement in _statements(script, db.dialect):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_migrations (component, version, applied_at)"
                    " VALUES (?, ?, ?)",
                    (component, version, now_ms()),
                )
            applied.append(f"{component}:{version}")
    return applied
