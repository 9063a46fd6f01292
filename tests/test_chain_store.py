"""Held jobs in the store, as plain functions over one database: what releases them, and how."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from supervisor.job import After, Approval, Job, RequestedBy, now
from supervisor.notify import Notices
from supervisor.state import JobStatus
from supervisor.store import Store, chains, claims, outbox
from supervisor.store import jobs as sql
from tests.helpers import pending_job
from workers.db import Database, connect
from workers.times import now_ms

BY = RequestedBy("ana", "operator", "0123abcd")


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    Store(url).migrate()
    database = connect(url)
    yield database
    database.close()


BUILD = Notices(("http://receiver/",), 60).notice_of


def _insert(db: Database, job: Job, key: str | None = None) -> Job:
    sql.insert_job(db, job, key, None, now_ms(), 1000, notice_of=BUILD)
    return job


def _held(
    parent: str | None,
    when: str = "completed",
    approval: bool = False,
    passed: dict[str, str] | None = None,
    config: bytes = b"{}",
) -> Job:
    job = pending_job()
    job.config = msgspec.Raw(config)
    job.after = None if parent is None else After(parent, when, passed)
    job.approval = Approval(expires_at=now() + timedelta(days=1)) if approval else None
    job.status = JobStatus.WAITING if parent else JobStatus.AWAITING_APPROVAL
    return job


def _end(db: Database, job: Job, status: JobStatus, result: object = None) -> None:
    """A run's final write: claimed, then ended (sql.update_job, fenced)."""
    claimed = claims.claim_jobs(db, "me", 100, now_ms())
    mine = {j.id: j for j, _ in claimed}
    run = mine[job.id]
    run.status, run.result, run.completed_at = status, result, now()
    assert sql.update_job(db, run, now_ms(), BUILD)


def _status(db: Database, job_id: str) -> JobStatus:
    found = sql.get_job(db, job_id)
    assert found is not None
    return found.status


def test_a_parent_s_end_releases_or_cancels_its_children(db: Database) -> None:
    parent = _insert(db, pending_job())
    on_success = _insert(db, _held(parent.id))
    on_any_end = _insert(db, _held(parent.id, when="finished"))
    grandchild = _insert(db, _held(on_success.id))
    assert _status(db, on_success.id) is JobStatus.WAITING
    _end(db, parent, JobStatus.FAILED)
    assert _status(db, on_success.id) is JobStatus.CANCELLED
    ended = sql.get_job(db, grandchild.id)
    assert ended is not None
    assert ended.status is JobStatus.CANCELLED  # the cancel goes down the chain
    assert ended.cancel is not None
    assert ended.cancel.reason == "dependency"
    assert _status(db, on_any_end.id) is JobStatus.PENDING


def test_a_child_of_an_ended_parent_is_released_at_its_insert(db: Database) -> None:
    parent = _insert(db, pending_job())
    _end(db, parent, JobStatus.COMPLETED)
    child = _insert(db, _held(parent.id))
    assert _status(db, child.id) is JobStatus.PENDING
    with pytest.raises(sql.UnknownParent):
        _insert(db, _held("no-such-job"))


def test_a_held_job_takes_its_key_when_released_and_waits_while_it_is_busy(
    db: Database,
) -> None:
    parent = _insert(db, pending_job(), key="group:g")
    child = _insert(db, _held(parent.id), key="group:g")  # no KeyTaken: held jobs hold no key
    rival = pending_job()
    _end(db, parent, JobStatus.COMPLETED)
    assert _status(db, child.id) is JobStatus.PENDING
    with pytest.raises(sql.KeyTaken):
        _insert(db, rival, key="group:g")  # the child holds it now

    first = _insert(db, pending_job(), key="group:h")
    second = _insert(db, _held(first.id, when="finished"), key="group:h")
    busy = _insert(db, pending_job())
    # Between the end's write and the release, another job took the key.
    db.execute("UPDATE jobs SET exclusive_key = NULL WHERE id = ?", (first.id,))
    db.execute("UPDATE jobs SET exclusive_key = 'group:h' WHERE id = ?", (busy.id,))
    _end(db, first, JobStatus.COMPLETED)
    assert _status(db, second.id) is JobStatus.WAITING  # the key is busy: it waits on
    db.execute("UPDATE jobs SET exclusive_key = NULL WHERE id = ?", (busy.id,))
    claims.claim_jobs(db, "me", 0, now_ms())  # the claim's sweep
    assert _status(db, second.id) is JobStatus.PENDING


def test_result_fields_are_copied_into_the_config(db: Database) -> None:
    parent = _insert(db, pending_job())
    passed = {"onlyWhatsappIds": "wouldRemoveWhatsappIds"}
    child = _insert(db, _held(parent.id, approval=True, passed=passed, config=b'{"x":1}'))
    missing = _insert(db, _held(parent.id, passed={"y": "absent"}))
    _end(db, parent, JobStatus.COMPLETED, {"wouldRemoveWhatsappIds": ["a", "b"]})
    released = sql.get_job(db, child.id)
    assert released is not None
    assert released.status is JobStatus.AWAITING_APPROVAL
    assert msgspec.json.decode(released.config) == {"x": 1, "onlyWhatsappIds": ["a", "b"]}
    refused = sql.get_job(db, missing.id)
    assert refused is not None
    assert refused.status is JobStatus.CANCELLED
    assert refused.error is not None
    assert "absent" in refused.error["message"]


def test_approve_reject_and_expire(db: Database) -> None:
    step = _insert(db, _held(None, approval=True))
    follower = _insert(db, _held(step.id))
    chains.approve(db, step.id, BY, now_ms())
    approved = sql.get_job(db, step.id)
    assert approved is not None
    assert approved.status is JobStatus.PENDING
    assert approved.approval is not None
    assert approved.approval.approved_by == BY
    with pytest.raises(chains.NotAwaiting) as refused:
        chains.reject(db, step.id, BY, now_ms())
    assert refused.value.status is JobStatus.PENDING
    assert _status(db, follower.id) is JobStatus.WAITING

    rejected = _insert(db, _held(None, approval=True))
    after_rejected = _insert(db, _held(rejected.id))
    chains.reject(db, rejected.id, BY, now_ms())
    assert _status(db, rejected.id) is JobStatus.CANCELLED
    assert _status(db, after_rejected.id) is JobStatus.CANCELLED

    late = _insert(db, _held(None, approval=True))
    due = claims.next_due(db)
    assert due is not None
    claims.claim_jobs(db, "me", 0, due + 1)
    expired = sql.get_job(db, late.id)
    assert expired is not None
    assert expired.status is JobStatus.CANCELLED
    assert expired.cancel is not None
    assert expired.cancel.reason == "expired"
    with pytest.raises(chains.NotAwaiting):
        chains.approve(db, late.id, BY, now_ms())


def test_cancelling_a_held_job_ends_its_followers(db: Database) -> None:
    step = _insert(db, _held(None, approval=True))
    follower = _insert(db, _held(step.id))
    cancelled = msgspec.structs.replace(step, status=JobStatus.CANCELLED, completed_at=now())
    assert claims.cancel_unclaimed(db, cancelled, now_ms())
    assert _status(db, follower.id) is JobStatus.CANCELLED
    assert [j.id for j in chains.followers(db, [step.id])] == [follower.id]


def _notified(db: Database) -> dict[str, list[tuple[str, str, str | None]]]:
    """Each job's outbox rows, oldest first: (event, the status it tells, its cancel reason)."""
    told: dict[str, list[tuple[str, str, str | None]]] = {}
    for row in reversed(outbox.list_rows(db, outbox.OutboxFilter(limit=100))):
        job = msgspec.json.decode(row.body)["job"]
        reason = (job.get("cancel") or {}).get("reason")
        told.setdefault(row.job_id, []).append((row.event, job["status"], reason))
    return told


def test_every_held_job_s_move_is_notified_in_its_write(db: Database) -> None:
    parent = _insert(db, pending_job())
    step = _insert(db, _held(parent.id, approval=True))
    gone = _insert(db, _held(parent.id, passed={"y": "absent"}))
    released = _insert(db, _held(parent.id))
    _end(db, parent, JobStatus.COMPLETED, {"x": 1})
    from_start = _insert(db, _held(None, approval=True))
    after_it = _insert(db, _held(from_start.id))
    chains.reject(db, from_start.id, BY, now_ms(), BUILD)
    late = _insert(db, _held(None, approval=True))
    assert late.approval is not None
    assert late.approval.expires_at is not None
    past_both = int(late.approval.expires_at.timestamp() * 1000) + 1
    claims.claim_jobs(db, "me", 0, past_both, BUILD)  # the claim's sweep expires step and late

    awaits = ("job.awaiting_approval", "awaiting_approval", None)
    assert _notified(db) == {
        parent.id: [("job.finished", "completed", None)],
        step.id: [awaits, ("job.finished", "cancelled", "expired")],
        gone.id: [("job.finished", "cancelled", "dependency")],
        # released: pending, which sends nothing; after_it: waiting, nothing either
        from_start.id: [awaits, ("job.finished", "cancelled", "rejected")],
        after_it.id: [("job.finished", "cancelled", "dependency")],
        late.id: [awaits, ("job.finished", "cancelled", "expired")],
    }
    assert _status(db, released.id) is JobStatus.PENDING


def test_without_a_url_the_held_jobs_moves_add_no_rows(db: Database) -> None:
    parent = _insert(db, pending_job())
    _insert(db, _held(parent.id, approval=True))
    claimed = claims.claim_jobs(db, "me", 1, now_ms())
    run = claimed[0][0]
    run.status, run.completed_at = JobStatus.FAILED, now()
    assert sql.update_job(db, run, now_ms(), Notices((), 60).notice_of)
    assert outbox.list_rows(db, outbox.OutboxFilter()) == []


def test_an_unclaimed_paused_job_s_timeout_ends_its_followers_notified(db: Database) -> None:
    paused = _insert(db, pending_job())
    follower = _insert(db, _held(paused.id))
    db.execute("UPDATE jobs SET status = 'paused', paused_at = 1 WHERE id = ?", (paused.id,))
    [ended] = claims.cancel_paused_too_long(db, 2, now_ms(), BUILD)
    assert (ended.id, ended.status) == (paused.id, JobStatus.CANCELLED)
    assert _notified(db) == {
        paused.id: [("job.finished", "cancelled", "paused_timeout")],
        follower.id: [("job.finished", "cancelled", "dependency")],
    }
