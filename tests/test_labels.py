"""Jobs listed by their type's label; rows stored before labels keep their group."""

from __future__ import annotations

from pathlib import Path

from supervisor.store import jobs as sql
from supervisor.store.migrations import migrate
from tests.helpers import pending_job
from workers import registry
from workers.db import connect


def test_a_row_stored_with_a_group_is_listed_by_its_label_after_the_migration(
    tmp_path: Path,
) -> None:
    db = connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        migrate(db, {"jobs": [m for m in sql.MIGRATIONS if m[0] <= 2]})
        old = pending_job("removal_queue")
        db.execute(
            "INSERT INTO jobs (id, type, status, config, progress, created_at, updated_at,"
            " group_wa_id) VALUES (?, ?, 'pending', '{}', '{}', ?, ?, ?)",
            (old.id, old.type, sql.to_ms(old.created_at), 0, "g1"),
        )
        assert migrate(db, {"jobs": sql.MIGRATIONS})[0] == "jobs:3"
        new = pending_job("removal_queue")
        sql.insert_job(db, new, None, sql.label_of("groupWaId", "g1"), 0, 100)
        sql.insert_job(
            db, pending_job("removal_queue"), None, sql.label_of("groupWaId", "g2"), 0, 100
        )
        listed = sql.list_jobs(db, sql.JobFilter(label=sql.label_of("groupWaId", "g1")))
        assert [j.id for j in listed] == [new.id, old.id]
    finally:
        db.close()


def test_the_removal_module_contributes_its_tables_routes_setting_and_label() -> None:
    registry.load(())
    assert "directory" in registry.migrations()
    paths = {route.path for route in registry.routes()}
    assert "/admin/groups/{groupWaId}" in paths
    assert registry.policy({}).min_delay_ms == 10_000
    assert registry.policy({"JOBSUP_MIN_DELAY_MS": "0"}).min_delay_ms == 0
    assert registry.label_names() == {"groupWaId"}
