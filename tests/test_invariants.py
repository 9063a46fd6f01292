"""The removal invariant checker finds each kind of violation it names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.invariants import assert_removal_invariants
from tests.removal_world import GROUP, db, garden, make_job, module_pg_url, url, workflow
from workers.db import Database
from workers.directory import mark_removed
from workers.removal import removal_workflow

__all__ = ["db", "make_job", "module_pg_url", "url"]  # fixtures, used by name


def success(db: Database, whatsapp_id: str) -> None:
    db.execute(
        "INSERT INTO removal_history (group_wa_id, whatsapp_id, outcome, reason, job_id, at)"
        " VALUES (?, ?, 'SUCCESS', 'test', 'job-x', 1)",
        (GROUP, whatsapp_id),
    )


BREAKS: dict[str, Callable[[Database], None]] = {
    # removed without a trace: what a removal committed alone used to leave
    "removed members without exactly one SUCCESS row": lambda db: mark_removed(
        db, GROUP, ["idle-1"], 1
    ),
    "present members with a SUCCESS row": lambda db: success(db, "talker"),
    "SUCCESS rows for unknown members": lambda db: success(db, "stranger"),
    "queued members who are no longer members": lambda db: db.execute(
        "INSERT INTO removal_queue (group_wa_id, whatsapp_id, queued_at, window_ms)"
        " VALUES (?, 'stranger', 1, 1)",
        (GROUP,),
    ),
    "intents of members no longer present": lambda db: db.execute(
        "INSERT INTO removal_intents (group_wa_id, whatsapp_id, job_id, attempt, reason, at)"
        " VALUES (?, 'stranger', 'job-x', 1, 'test', 1)",
        (GROUP,),
    ),
}


def test_a_clean_run_passes(db: Database, make_job: Any, url: str) -> None:
    garden(db)
    removal_workflow(make_job("job-ok").ctx, workflow(batch_size=2))
    counts = assert_removal_invariants(url, [GROUP])
    assert (counts.present, counts.removed, counts.success_rows, counts.queued) == (3, 5, 5, 0)
    assert assert_removal_invariants(url) == counts
    assert assert_removal_invariants(url, []).present == 0


@pytest.mark.parametrize("broken", sorted(BREAKS))
def test_each_violation_is_named(db: Database, url: str, broken: str) -> None:
    garden(db)
    assert_removal_invariants(url, [GROUP])
    BREAKS[broken](db)
    with pytest.raises(AssertionError, match=broken):
        assert_removal_invariants(url, [GROUP])


def test_a_second_success_row_is_a_violation(db: Database, url: str) -> None:
    garden(db)
    mark_removed(db, GROUP, ["idle-1"], 1)
    success(db, "idle-1")
    assert assert_removal_invariants(url).removed == 1
    success(db, "idle-1")
    with pytest.raises(AssertionError, match=r"1 removed members without exactly one SUCCESS"):
        assert_removal_invariants(url)
