"""The removal domain: directory, queue, gateways and the two removal job types.

In process, over the test world of ``tests.removal_world`` (SQLite and PostgreSQL).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.removal_world import (
    DAY_MS,
    GROUP,
    INACTIVE,
    WINDOW_MS,
    current_ids,
    db,
    garden,
    history,
    make_job,
    member,
    module_pg_url,
    put_group,
    queue_earlier,
    queue_job,
    queued_ids,
    snapshot,
    url,
    workflow,
)
from workers import directory, registry
from workers.context import JobCancelled
from workers.db import SQLITE_CACHE_KIB, Database, connect_sqlite
from workers.directory import GroupIn, MemberIn, current_ms, from_ms
from workers.directory import queue as removal_queue
from workers.gateways import gateway_for
from workers.gateways.local import LocalGateway
from workers.registry import ConfigRejected
from workers.removal import (
    RemovalQueueConfig,
    RemovalWorkflowConfig,
    check_group,
    removal_queue_job,
    removal_workflow,
    run_workflow,
)

__all__ = ["db", "make_job", "module_pg_url", "url"]  # fixtures, used by name

# --- directory -----------------------------------------------------------------


def test_inactivity_rule(db: Database) -> None:
    now_ms = current_ms()
    edge = now_ms - WINDOW_MS
    joined = from_ms(now_ms - 400 * DAY_MS)
    put_group(
        db,
        [
            member("admin", idle_days=100, admin=True),
            member("friend", idle_days=100),
            member("never-old", joined_days=100),
            member("never-new", joined_days=5),
            member("idle", idle_days=100),
            member("recent", idle_days=1),
            MemberIn(whatsapp_id="on-edge", joined_at=joined, last_active_at=from_ms(edge)),
            MemberIn(whatsapp_id="past-edge", joined_at=joined, last_active_at=from_ms(edge - 1)),
        ],
    )
    directory.set_whitelist(db, GROUP, ["friend"])

    summary = directory.group_summary(db, GROUP, WINDOW_MS, now_ms)
    assert summary is not None
    assert summary.inactive_count == 3
    with db.transaction():
        queued = removal_queue.queue_inactive(db, GROUP, WINDOW_MS, now_ms, "job-q")
    assert queued == 3
    assert queued_ids(db) == ["idle", "never-old", "past-edge"]
    assert directory.is_inactive(edge - 1, WINDOW_MS, now_ms)
    assert not directory.is_inactive(edge, WINDOW_MS, now_ms)


def test_put_group_upserts_members(db: Database) -> None:
    first = directory.upsert_group(
        db,
        GROUP,
        GroupIn(name="Garden", members=[member("x"), member("y", idle_days=3), member("z")]),
        1_000,
    )
    assert (first.name, first.member_count, first.inactive_count) == ("Garden", 3, None)

    second = directory.upsert_group(
        db,
        GROUP,
        GroupIn(name="Orchard", members=[member("y"), member("w", admin=True)]),
        2_000,
        window_ms=WINDOW_MS,
    )
    assert (second.name, second.member_count, second.admin_count) == ("Orchard", 2, 1)
    assert (second.created_at, second.updated_at) == (from_ms(1_000), from_ms(2_000))
    assert second.inactive_count == 0  # y keeps the activity the second listing omitted
    assert current_ids(db) == ["w", "y"]
    everyone = {m.whatsapp_id: m for m in directory.list_members(db, GROUP, include_removed=True)}
    assert [everyone[w].removed_at for w in ("x", "z")] == [from_ms(2_000)] * 2
    assert everyone["y"].last_active_at is not None

    directory.upsert_group(db, GROUP, GroupIn(name="Orchard", members=[member("x")]), 3_000)
    assert current_ids(db) == ["x"]  # re-listed: back, the others gone
    assert history(db) == []  # leaving is not a removal

    with pytest.raises(ValueError, match="duplicate whatsappId 'v'"):
        directory.upsert_group(
            db, GROUP, GroupIn(name="Dup", members=[member("v"), member("v")]), 4_000
        )
    unchanged = directory.group_summary(db, GROUP, WINDOW_MS, 4_000)
    assert unchanged is not None
    assert unchanged.name == "Orchard"
    assert current_ids(db) == ["x"]


def test_public_shapes_encode_camel_case_and_iso_times(db: Database) -> None:
    put_group(db, [member("x", idle_days=100)])
    summary = msgspec.json.decode(
        msgspec.json.encode(directory.group_summary(db, GROUP, WINDOW_MS, current_ms()))
    )
    assert summary["groupWaId"] == GROUP
    assert (summary["memberCount"], summary["inactiveCount"], summary["removedCount"]) == (1, 1, 0)
    assert summary["createdAt"].endswith("Z")
    [view] = msgspec.json.decode(msgspec.json.encode(directory.list_members(db, GROUP)))
    assert set(view) == {
        "whatsappId", "isAdmin", "joinedAt", "lastActiveAt", "removedAt", "whitelisted", "queued",
    }  # fmt: skip


def test_member_in_rejects_bad_input() -> None:
    def decode(body: dict[str, Any]) -> MemberIn:
        return msgspec.json.decode(msgspec.json.encode(body), type=MemberIn)

    ok = decode({"whatsappId": "x", "joinedAt": "2024-01-01T00:00:00Z"})
    assert (ok.is_admin, ok.last_active_at) == (False, None)
    with pytest.raises(msgspec.ValidationError, match="whatsappId"):
        decode({"whatsappId": "", "joinedAt": "2024-01-01T00:00:00Z"})
    with pytest.raises(msgspec.ValidationError, match="joinedAt"):
        decode({"whatsappId": "x", "joinedAt": "2024-01-01T00:00:00"})  # no timezone
    with pytest.raises(msgspec.ValidationError, match="nickname"):
        decode({"whatsappId": "x", "joinedAt": "2024-01-01T00:00:00Z", "nickname": "x"})


def test_whitelist_and_history_reads(db: Database) -> None:
    with pytest.raises(directory.UnknownGroup):
        directory.set_whitelist(db, GROUP, ["a"])
    put_group(db, [member("a"), member("b")])
    assert directory.set_whitelist(db, GROUP, ["b", "a", "b"]) == ["a", "b"]
    assert directory.set_whitelist(db, GROUP, ["c"]) == ["c"]
    assert [m.whitelisted for m in directory.list_members(db, GROUP)] == [False, False]

    for at, (wid, job) in enumerate([("a", "j1"), ("b", "j2"), ("c", "j2")]):
        with db.transaction():
            removal_queue.record_batch(
                db, GROUP, removed={wid: "inactive"}, failed={}, skipped=[], job_id=job, now_ms=at
            )
    assert [r.whatsapp_id for r in directory.removal_history(db, GROUP)] == ["c", "b", "a"]
    assert [r.whatsapp_id for r in directory.removal_history(db, GROUP, limit=1)] == ["c"]
    assert [r.whatsapp_id for r in directory.removal_history(db, GROUP, job_id="j1")] == ["a"]
    assert directory.removal_history(db, "other") == []


def test_local_gateway_removes_current_members_only(db: Database) -> None:
    put_group(db, [member("a"), member("b")])
    gateway = gateway_for(db, GROUP)
    assert isinstance(gateway, LocalGateway)
    assert gateway.fetch_members(GROUP) is None
    assert gateway.remove(GROUP, ["a", "ghost"]) == {"a": None, "ghost": "not a member"}
    assert gateway.remove(GROUP, ["a"]) == {"a": "not a member"}
    assert current_ids(db) == ["b"]


# --- job types -----------------------------------------------------------------


def test_check_rejects_unknown_group_with_404(db: Database) -> None:
    with pytest.raises(ConfigRejected) as info:
        check_group(workflow(), db)
    assert (info.value.field, info.value.status) == ("groupWaId", 404)
    assert GROUP in info.value.message
    put_group(db, [member("a")])
    check_group(workflow(), db)
    check_group(queue_job(), db)


def test_job_types_are_registered() -> None:
    for name, config in (("removal_workflow", workflow()), ("removal_queue", queue_job())):
        job_type = registry.get(name)
        assert job_type.idempotent
        assert job_type.exclusive_key is not None
        assert job_type.exclusive_key(config) == f"group:{GROUP}"
        assert job_type.check is check_group
    assert registry.get("removal_workflow").run is removal_workflow
    assert registry.get("removal_queue").run is removal_queue_job


VALID = {
    "type": "removal_workflow",
    "groupWaId": GROUP,
    "batchSize": 5,
    "delayMs": 0,
    "dryRun": True,
    "inactivityWindowMs": WINDOW_MS,
}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batchSize": None}, "batchSize"),
        ({"batchSize": 0}, "batchSize"),
        ({"delayMs": -1}, "delayMs"),
        ({"groupWaId": ""}, "groupWaId"),
        ({"inactivityWindowMs": 0}, "inactivityWindowMs"),
        ({"dryRun": None}, "dryRun"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_config_decoding_names_the_bad_field(change: dict[str, Any], field: str) -> None:
    body = {**VALID, **change}
    body = {k: v for k, v in body.items() if v is not None}  # None: leave the field out
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.json.decode(msgspec.json.encode(body), type=RemovalWorkflowConfig)


def test_config_decoding_accepts_both_types() -> None:
    configs = RemovalWorkflowConfig | RemovalQueueConfig
    decoded = msgspec.json.decode(msgspec.json.encode(VALID), type=configs)
    assert decoded == workflow(batch_size=5, dry_run=True)
    body = {k: v for k, v in VALID.items() if k != "inactivityWindowMs"} | {"type": "removal_queue"}
    assert msgspec.json.decode(msgspec.json.encode(body), type=configs) == queue_job(5, 0, True)
    with pytest.raises(msgspec.ValidationError, match="inactivityWindowMs"):
        msgspec.json.decode(msgspec.json.encode(VALID | body | {"inactivityWindowMs": 1}),
                            type=RemovalQueueConfig)  # fmt: skip


def test_a_removal_whose_group_is_gone_fails_before_writing(db: Database, make_job: Any) -> None:
    """A group deleted between a start's check and its run: nothing is written for it."""
    with pytest.raises(LookupError, match="was deleted before the job began"):
        removal_workflow(make_job("job-8").ctx, workflow(batch_size=2))
    assert snapshot(db)["wa_members"] == []


def test_workflow_removes_in_batches_and_records_history(db: Database, make_job: Any) -> None:
    garden(db)
    job = make_job("job-7")
    result = removal_workflow(job.ctx, workflow(batch_size=2, delay_ms=1_500))

    assert result == {
        "groupWaId": GROUP,
        "dryRun": False,
        "queued": 5,
        "removedWhatsappIds": INACTIVE,
        "failed": [],
        "skippedWhatsappIds": [],
        "wouldRemoveWhatsappIds": [],
    }
    assert job.ctx.last_partial == result
    assert job.ctx.sleeps == [1.5, 1.5]  # between the three batches, not after the last
    assert history(db) == [(wid, "SUCCESS", "inactive for 100 days", "job-7") for wid in INACTIVE]
    assert queued_ids(db) == []
    assert current_ids(db) == ["admin", "friend", "talker"]
    assert [m.message for m in job.progress("sync")] == [
        "fetching members",
        "queued 5 inactive members",
    ]
    assert [(m.processed, m.total) for m in job.progress("removal")] == [
        (0, 5), (2, 5), (4, 5), (5, 5),
    ]  # fmt: skip
    assert [len(p["removedWhatsappIds"]) for p in job.partials()] == [0, 0, 2, 4, 5]
    summary = directory.group_summary(db, GROUP, WINDOW_MS, current_ms())
    assert summary is not None
    assert (summary.member_count, summary.queued_count, summary.removed_count) == (3, 0, 5)
    assert summary.inactive_count == 0
    [record, *_] = directory.removal_history(db, GROUP, job_id="job-7")
    assert (record.outcome, record.job_id) == ("SUCCESS", "job-7")


def test_removal_queue_checks_each_member_again(db: Database, make_job: Any) -> None:
    garden(db)
    with db.transaction():
        removal_queue.queue_inactive(db, GROUP, WINDOW_MS, current_ms(), "job-sync")
    # Between queueing and removal: idle-1 became an admin, idle-2 was
    # whitelisted, idle-3 spoke (inside the 30 days it was queued with), idle-4 left.
    put_group(
        db,
        [
            member("idle-1", idle_days=100, admin=True),
            member("idle-2", idle_days=100),
            member("idle-3", idle_days=20),
            member("idle-5", idle_days=100),
            member("friend", idle_days=100),
        ],
    )
    directory.set_whitelist(db, GROUP, ["friend", "idle-2"])
    job = make_job("job-8")
    result = removal_queue_job(job.ctx, queue_job(batch_size=2))

    assert result["removedWhatsappIds"] == ["idle-5"]
    assert result["skippedWhatsappIds"] == ["idle-1", "idle-2", "idle-3", "idle-4"]
    assert result["queued"] == 0
    assert history(db) == [("idle-5", "SUCCESS", "inactive for 100 days", "job-8")]
    assert queued_ids(db) == []
    logs = job.logs()
    assert [line for line in logs if line.startswith("skipped")] == [
        "skipped idle-1: admin",
        "skipped idle-2: whitelisted",
        "skipped idle-3: active again",
        "skipped idle-4: not a member",
    ]
    # Each batch leaves its tally in the job's own log, as its progress says it.
    assert [line for line in logs if line.startswith("batch")] == [
        "batch 1/3: 0 removed, 0 failed, 2 skipped",
        "batch 2/3: 0 removed, 0 failed, 4 skipped",
        "batch 3/3: 1 removed, 0 failed, 4 skipped",
    ]


class FlakyGateway(LocalGateway):
    """The local gateway, except that idle-2 is refused and idle-4 gets no answer."""

    def remove(self, group_wa_id: str, whatsapp_ids: list[str]) -> dict[str, str | None]:
        answers = super().remove(
            group_wa_id, [w for w in whatsapp_ids if w not in ("idle-2", "idle-4")]
        )
        if "idle-2" in whatsapp_ids:
            answers["idle-2"] = "rate limited"
        return answers


def test_gateway_failures_are_recorded_and_dequeued(db: Database, make_job: Any) -> None:
    garden(db)
    job = make_job("job-f")
    result = run_workflow(job.ctx, db, FlakyGateway(db), workflow(batch_size=3))

    assert result["removedWhatsappIds"] == ["idle-1", "idle-3", "idle-5"]
    assert result["failed"] == [
        {"whatsappId": "idle-2", "reason": "rate limited"},
        {"whatsappId": "idle-4", "reason": "no answer from the gateway"},
    ]
    assert history(db) == [
        ("idle-1", "SUCCESS", "inactive for 100 days", "job-f"),
        ("idle-2", "FAILURE", "rate limited", "job-f"),
        ("idle-3", "SUCCESS", "inactive for 100 days", "job-f"),
        ("idle-4", "FAILURE", "no answer from the gateway", "job-f"),
        ("idle-5", "SUCCESS", "inactive for 100 days", "job-f"),
    ]
    assert queued_ids(db) == []
    assert current_ids(db) == ["admin", "friend", "idle-2", "idle-4", "talker"]


@pytest.mark.parametrize("batch_size", [1, 2, 4, 100])
def test_dry_run_changes_nothing_and_lists_each_member_once(
    db: Database, make_job: Any, batch_size: int
) -> None:
    garden(db)
    queue_earlier(db, "idle-4", "friend")  # friend was whitelisted since: would be skipped
    before = snapshot(db)
    job = make_job("job-dry")
    result = removal_workflow(job.ctx, workflow(batch_size, delay_ms=60_000, dry_run=True))

    assert snapshot(db) == before
    assert result == {
        "groupWaId": GROUP,
        "dryRun": True,
        "queued": 4,  # what the sync would have queued: idle-4 was queued already
        "removedWhatsappIds": [],
        "failed": [],
        "skippedWhatsappIds": ["friend"],
        # the queue in order, then the newly inactive by whatsappId
        "wouldRemoveWhatsappIds": ["idle-4", "idle-1", "idle-2", "idle-3", "idle-5"],
    }
    assert job.ctx.sleeps == []  # nothing is sent, so there is no rate limit to respect
    assert [m.message for m in job.progress("sync")][-1] == "4 inactive members would be queued"
    steps = [(m.processed, m.total) for m in job.progress("removal")]
    assert steps == [(min(n * batch_size, 6), 6) for n in range(-(-6 // batch_size) + 1)]


def test_dry_run_of_the_queue_changes_nothing(db: Database, make_job: Any) -> None:
    garden(db)
    queue_earlier(db, "idle-4", "friend", "idle-2")
    before = snapshot(db)
    result = removal_queue_job(make_job().ctx, queue_job(batch_size=1, dry_run=True))
    assert snapshot(db) == before
    assert result["wouldRemoveWhatsappIds"] == ["idle-4", "idle-2"]
    assert result["skippedWhatsappIds"] == ["friend"]


@pytest.mark.parametrize("kind", ["workflow", "queue"])
def test_cancel_before_the_first_batch(db: Database, make_job: Any, kind: str) -> None:
    garden(db)
    queue_earlier(db, "idle-1")
    before = snapshot(db)
    job = make_job("job-c")
    job.cancel.set()
    run, config = (
        (removal_workflow, workflow()) if kind == "workflow" else (removal_queue_job, queue_job())
    )
    with pytest.raises(JobCancelled):
        run(job.ctx, config)
    assert job.ctx.last_partial["removedWhatsappIds"] == []
    assert snapshot(db) == before


def test_cancel_between_batches_keeps_what_was_done(db: Database, make_job: Any) -> None:
    garden(db)
    job = make_job("job-c", cancel_when=lambda r: len(r["removedWhatsappIds"]) >= 2)
    with pytest.raises(JobCancelled):
        removal_workflow(job.ctx, workflow(batch_size=2, delay_ms=60_000))

    assert job.ctx.sleeps == [60.0]  # the wait before the second batch woke on the cancel
    done = job.ctx.last_partial["removedWhatsappIds"]
    assert done == ["idle-1", "idle-2"]
    assert history(db) == [(wid, "SUCCESS", "inactive for 100 days", "job-c") for wid in done]
    assert queued_ids(db) == ["idle-3", "idle-4", "idle-5"]

    resumed = removal_queue_job(make_job("job-r").ctx, queue_job(batch_size=10))
    assert resumed["removedWhatsappIds"] == ["idle-3", "idle-4", "idle-5"]
    assert len(history(db)) == 5


@pytest.mark.parametrize("kind", ["workflow", "queue"])
def test_a_job_run_again_and_cancelled_at_once_still_lists_its_earlier_removals(
    db: Database, make_job: Any, kind: str
) -> None:
    """Rescued after its instance died, then cancelled before its first batch: nothing is hidden."""
    garden(db)
    first = make_job("job-c", cancel_when=lambda r: len(r["removedWhatsappIds"]) >= 2)
    with pytest.raises(JobCancelled):
        removal_workflow(first.ctx, workflow(batch_size=2, delay_ms=60_000))
    assert first.ctx.last_partial["removedWhatsappIds"] == ["idle-1", "idle-2"]

    again = make_job("job-c")  # the same job, its next run
    if kind == "workflow":  # it resumes from the place its first run saved
        again.ctx.state, again.ctx.resumed = {"queued": 5, "batchesDone": 1}, True
    again.cancel.set()
    run, config = (
        (removal_workflow, workflow(batch_size=2))
        if kind == "workflow"
        else (removal_queue_job, queue_job(batch_size=2))
    )
    with pytest.raises(JobCancelled):
        run(again.ctx, config)
    assert again.ctx.last_partial["removedWhatsappIds"] == ["idle-1", "idle-2"]
    assert queued_ids(db) == ["idle-3", "idle-4", "idle-5"]  # and it did nothing more


def test_cancel_during_a_dry_run(db: Database, make_job: Any) -> None:
    garden(db)
    before = snapshot(db)
    job = make_job("job-c", cancel_when=lambda r: len(r["wouldRemoveWhatsappIds"]) >= 2)
    with pytest.raises(JobCancelled):
        removal_workflow(job.ctx, workflow(batch_size=2, dry_run=True))
    assert job.ctx.last_partial["wouldRemoveWhatsappIds"] == ["idle-1", "idle-2"]
    assert snapshot(db) == before


def test_sqlite_connections_bound_their_page_cache(tmp_path: Any) -> None:
    conn = connect_sqlite(str(tmp_path / "cache.db"))
    try:
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -SQLITE_CACHE_KIB
    finally:
        conn.close()
