"""A remote gateway's removals, journaled: intents before the call, outcomes after.

In process, with a fake remote gateway (a group that lives outside our
database), on SQLite and PostgreSQL. A run that dies between the call and
the settle leaves intents; the next sync or removal settles them from what
the gateway reports, so each member ends with exactly one outcome row.
"""

from __future__ import annotations

from typing import Any

import pytest

from removal.gateways import GatewayError
from tests.removal_world import (
    GROUP,
    INACTIVE,
    current_ids,
    db,
    garden,
    history,
    make_job,
    module_pg_url,
    queue_job,
    queued_ids,
    url,
    workflow,
)
from workers.db import Database
from workers.directory import MemberIn, journal, list_members
from workers.fence import StaleRun
from workers.removal import run_queue, run_workflow

__all__ = ["db", "make_job", "module_pg_url", "url"]  # fixtures, used by name

GROUP_MEMBERS = ["admin", "friend", *INACTIVE, "talker"]
REASON = "inactive for 100 days"


class Died(BaseException):
    """The child's death (SIGKILL) at that point: nothing after it runs."""


class FakeRemote:
    """A group that lives elsewhere: its own member list, removals by call."""

    transactional = False

    def __init__(self, db: Database, refuse: tuple[str, ...] = ()) -> None:
        # The remote side starts as our directory shows the group.
        self.members = {m.whatsapp_id: m for m in list_members(db, GROUP)}
        self.refuse = refuse
        self.calls: list[list[str]] = []
        self.die: str | None = None  # "before" or "after" the removal takes effect

    def fetch_members(self, group_wa_id: str) -> list[MemberIn]:
        return [
            MemberIn(
                whatsapp_id=m.whatsapp_id,
                is_admin=m.is_admin,
                joined_at=m.joined_at,
                last_active_at=m.last_active_at,
            )
            for m in self.members.values()
        ]

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        self.calls.append(list(whatsapp_ids))
        if self.die == "before":
            raise Died
        answers: dict[str, str | None] = {}
        for wid in whatsapp_ids:
            if wid in self.refuse:
                answers[wid] = "rate limited"
            elif self.members.pop(wid, None) is None:
                answers[wid] = "not a member"
            else:
                answers[wid] = None
        if self.die == "after":
            raise Died
        return answers


def intents(db: Database) -> list[tuple[Any, ...]]:
    return sorted(db.query("SELECT whatsapp_id, job_id, attempt, reason FROM removal_intents"))


def test_a_remote_removal_is_journaled_then_settled(db: Database, make_job: Any) -> None:
    garden(db)
    gateway = FakeRemote(db, refuse=("idle-2",))
    job = make_job("job-r")
    result = run_workflow(job.ctx, db, gateway, workflow(batch_size=2))

    assert gateway.calls == [["idle-1", "idle-2"], ["idle-3", "idle-4"], ["idle-5"]]
    assert result["removedWhatsappIds"] == ["idle-1", "idle-3", "idle-4", "idle-5"]
    assert result["failed"] == [{"whatsappId": "idle-2", "reason": "rate limited"}]
    assert history(db) == [
        ("idle-1", "SUCCESS", REASON, "job-r"),
        ("idle-2", "FAILURE", "rate limited", "job-r"),
        ("idle-3", "SUCCESS", REASON, "job-r"),
        ("idle-4", "SUCCESS", REASON, "job-r"),
        ("idle-5", "SUCCESS", REASON, "job-r"),
    ]
    assert intents(db) == []
    assert queued_ids(db) == []
    assert current_ids(db) == sorted(gateway.members)


class JournalSpy(FakeRemote):
    """Records the journal as the gateway is called: the intents must be there."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._db = db
        self.seen: list[list[tuple[Any, ...]]] = []

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        self.seen.append(intents(self._db))
        return super().remove(group_wa_id, whatsapp_ids)


def test_intents_are_committed_before_the_call(db: Database, make_job: Any) -> None:
    garden(db)
    gateway = JournalSpy(db)
    run_workflow(make_job("job-j").ctx, db, gateway, workflow(batch_size=3))
    assert gateway.seen == [
        [(wid, "job-j", 1, REASON) for wid in INACTIVE[:3]],
        [(wid, "job-j", 1, REASON) for wid in INACTIVE[3:]],
    ]


@pytest.mark.parametrize("kind", ["workflow", "queue"])
def test_a_run_that_died_after_the_call_is_settled_as_removed(
    db: Database, make_job: Any, kind: str
) -> None:
    garden(db)
    gateway = FakeRemote(db)
    gateway.die = "after"
    with pytest.raises(Died):
        run_workflow(make_job("job-d").ctx, db, gateway, workflow(batch_size=2))
    # Removed over there, not recorded here yet: only the journal knows.
    assert intents(db) == [("idle-1", "job-d", 1, REASON), ("idle-2", "job-d", 1, REASON)]
    assert history(db) == []

    gateway.die = None
    next_job = make_job("job-n").ctx
    if kind == "workflow":
        result = run_workflow(next_job, db, gateway, workflow(batch_size=10))
    else:
        result = run_queue(next_job, db, gateway, queue_job(batch_size=10))
    assert (
        history(db)
        == [
            ("idle-1", "SUCCESS", REASON, "job-d"),  # settled from the gateway's member list
            ("idle-2", "SUCCESS", REASON, "job-d"),
            *[(wid, "SUCCESS", REASON, "job-n") for wid in INACTIVE[2:]],
        ]
    )
    assert result["removedWhatsappIds"] == INACTIVE[2:]
    assert gateway.calls[-1] == INACTIVE[2:]  # nobody asked twice
    assert intents(db) == []
    assert queued_ids(db) == []
    assert current_ids(db) == ["admin", "friend", "talker"] == sorted(gateway.members)


def test_a_run_that_died_before_the_call_records_nothing(db: Database, make_job: Any) -> None:
    garden(db)
    gateway = FakeRemote(db)
    gateway.die = "before"
    with pytest.raises(Died):
        run_workflow(make_job("job-d").ctx, db, gateway, workflow(batch_size=2))
    assert len(intents(db)) == 2

    gateway.die = None
    result = run_queue(make_job("job-n").ctx, db, gateway, queue_job(batch_size=10))
    # Still members when the leftovers were settled: not removed, the intents
    # dropped, and this run removed them as queued.
    assert result["removedWhatsappIds"] == INACTIVE
    assert history(db) == [(wid, "SUCCESS", REASON, "job-n") for wid in INACTIVE]
    assert intents(db) == []


def test_a_stale_remote_run_journals_and_calls_nothing(db: Database, make_job: Any) -> None:
    garden(db)
    gateway = FakeRemote(db)
    job = make_job("job-s")

    def rescue() -> None:
        db.execute("UPDATE jobs SET attempts = 2 WHERE id = 'job-s'")

    job.ctx.between_batches = rescue
    with pytest.raises(StaleRun):
        run_workflow(job.ctx, db, gateway, workflow(batch_size=2, delay_ms=1))
    assert gateway.calls == [INACTIVE[:2]]
    assert intents(db) == []
    assert [row[0] for row in history(db)] == INACTIVE[:2]
    assert queued_ids(db) == INACTIVE[2:]


def test_a_member_with_an_unsettled_intent_is_not_asked_for_again(db: Database) -> None:
    garden(db)
    with db.transaction():
        first = journal.write_intents(
            db, GROUP, {"idle-1": REASON}, job_id="a", attempt=1, now_ms=1
        )
        second = journal.write_intents(
            db,
            GROUP,
            {"idle-1": REASON, "idle-2": REASON},
            job_id="b",
            attempt=1,
            now_ms=2,
        )
    assert (list(first), list(second)) == (["idle-1"], ["idle-2"])


class FailingRemote(FakeRemote):
    """The whole call fails: surely nothing done, or no answer (it may have acted)."""

    def __init__(self, db: Database, unsure: bool) -> None:
        super().__init__(db)
        self.unsure = unsure

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        self.calls.append(list(whatsapp_ids))
        if self.unsure:
            for wid in whatsapp_ids:  # it did act; its answer was lost
                self.members.pop(wid, None)
        raise GatewayError("no luck", GatewayError.UNAVAILABLE, unsure=self.unsure)


def test_a_call_that_surely_did_nothing_records_failures_and_keeps_them_queued(
    db: Database, make_job: Any
) -> None:
    garden(db)
    gateway = FailingRemote(db, unsure=False)
    with pytest.raises(GatewayError):
        run_workflow(make_job("job-f").ctx, db, gateway, workflow(batch_size=2))
    assert history(db) == [(w, "FAILURE", "no luck", "job-f") for w in INACTIVE[:2]]
    assert intents(db) == []
    assert queued_ids(db) == INACTIVE  # nobody dequeued: the next removal tries again


def test_a_call_without_an_answer_is_settled_by_the_next_sync(db: Database, make_job: Any) -> None:
    garden(db)
    gateway = FailingRemote(db, unsure=True)
    with pytest.raises(GatewayError):
        run_workflow(make_job("job-u").ctx, db, gateway, workflow(batch_size=2))
    assert history(db) == []
    assert [i[0] for i in intents(db)] == INACTIVE[:2]
    gateway.unsure = False
    fine = FakeRemote(db)
    fine.members = gateway.members  # the group as it now is: the first two are gone
    run_workflow(make_job("job-v").ctx, db, fine, workflow(batch_size=2))
    assert history(db) == sorted(
        [(w, "SUCCESS", REASON, "job-u") for w in INACTIVE[:2]]
        + [(w, "SUCCESS", REASON, "job-v") for w in INACTIVE[2:]]
    )
    assert intents(db) == []
