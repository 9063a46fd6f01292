"""Hostile requests against limits, pause, chains, approvals and their streams.

Each test here is a defect found by attacking a real server from outside.
"""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import Server, wait_until
from tests.helpers import WINDOW_MS, group_body, iso_days_ago, removal


def test_result_to_config_fills_only_the_types_own_fields(server: Server) -> None:
    parent = server.start_job({"type": "quick", "value": 1})
    for field in ("type", "noSuchField"):
        answer = server.client.post(
            "/admin/jobs/start",
            json={
                "type": "quick",
                "after": {"jobId": parent, "resultToConfig": {field: "value"}},
            },
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == "after.resultToConfig"
    answer = server.client.post(
        "/admin/chains",
        json={
            "steps": [
                {"type": "quick"},
                {"type": "quick", "after": {"resultToConfig": {"type": "value"}}},
            ]
        },
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "steps[1].after.resultToConfig"
    # A real field still passes the parent's result on.
    child = server.start_job(
        {"type": "quick", "after": {"jobId": parent, "resultToConfig": {"value": "value"}}}
    )
    assert server.wait_status(child, "completed")["result"] == {"value": 1}


def test_result_to_config_never_fills_a_field_of_the_exclusive_key(server: Server) -> None:
    """A removal's group is its key: copied in after the checks, the job would hold the
    key of the group it was started for while removing from another, beside that
    group's own removal."""
    for group in ("g-started", "g-other"):
        assert server.client.put(f"/admin/groups/{group}", json=group_body(3)).status_code == 200
    parent = server.start_job({"type": "quick", "value": 1})
    into_key = {"jobId": parent, "resultToConfig": {"groupWaId": "group"}}
    answer = server.client.post("/admin/jobs/start", json=removal("g-started", after=into_key))
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "after.resultToConfig"
    assert "exclusive key" in error["message"]
    # A field outside the key still passes the parent's result on (a plan's pinned members).
    pinned = {"jobId": parent, "resultToConfig": {"onlyWhatsappIds": "ids"}}
    answer = server.client.post("/admin/jobs/start", json=removal("g-started", after=pinned))
    assert answer.status_code == 202, answer.text


def test_a_rerun_of_an_approval_step_waits_for_its_own_approval(server: Server) -> None:
    gated = server.start_job({"type": "quick", "value": 7, "approval": True})
    assert server.status(gated)["status"] == "awaiting_approval"
    answer = server.client.post(f"/admin/jobs/{gated}/rerun")
    assert answer.status_code == 202, answer.text
    assert answer.json()["status"] == "awaiting_approval"  # not run unapproved
    assert server.client.post(f"/admin/jobs/{gated}/reject").status_code == 200
    answer = server.client.post(f"/admin/jobs/{gated}/rerun")  # rejected: still gated
    copy = answer.json()["jobId"]
    assert server.status(copy)["status"] == "awaiting_approval"
    assert server.client.post(f"/admin/jobs/{copy}/approve").status_code == 200
    assert server.wait_status(copy, "completed")["result"] == {"value": 7}


def test_a_pause_the_job_ends_before_holding_is_refused(
    make_server: Callable[..., Server],
) -> None:
    # The pause waits for the job to hold; this one reaches no context call and
    # completes instead: the answer says it was not paused, not 202 "completed".
    server = make_server(JOBSUP_CANCEL_WAIT_S="60")
    job_id = server.start_job({"type": "stubborn", "seconds": 1})
    server.wait_status(job_id, "running")
    wait_until(lambda: server.status(job_id)["progress"]["message"] == "stuck inside a batch")
    answer = server.client.post(f"/admin/jobs/{job_id}/pause")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "not_running"
    assert server.status(job_id)["status"] == "completed"


def test_a_chain_step_after_the_first_takes_no_time_of_its_own(server: Server) -> None:
    # Its after is implicit: a runAt/delayS there was accepted, then ignored
    # (the step ran at once, its record showing a runAt still to come).
    for field, value in (("delayS", 300), ("runAt", iso_days_ago(-1))):
        answer = server.client.post(
            "/admin/chains", json={"steps": [{"type": "quick"}, {"type": "quick", field: value}]}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == f"steps[1].{field}"
    assert server.client.get("/admin/jobs").json() == []


def test_a_removal_plan_answers_its_expiry_as_every_time_is_written(server: Server) -> None:
    assert server.client.put("/admin/groups/g1@g.us", json=group_body(3)).status_code == 200
    answer = server.client.post(
        "/admin/groups/g1@g.us/removal-plans",
        json={"batchSize": 3, "delayMs": 0, "inactivityWindowMs": WINDOW_MS},
    )
    assert answer.status_code == 202, answer.text
    plan = answer.json()
    held = server.status(plan["removalJobId"])
    # The same text as the job's own approval.expiresAt: UTC, milliseconds, Z.
    assert plan["expiresAt"] == held["approval"]["expiresAt"]
    assert plan["expiresAt"].endswith("Z")


def test_a_job_runs_and_is_heard_under_the_lowest_open_files_limit(server: Server) -> None:
    # openFiles 1 and 2 are accepted (ints from 1): the child's output capture
    # (dup2 onto fds 1 and 2) ran under the limit, failed, and every such job
    # "exited with code 1 without reporting a result" before it began.
    for open_files in (1, 2):
        job_id = server.start_job(
            {"type": "print", "lines": 3, "limits": {"openFiles": open_files}}
        )
        job = server.wait_status(job_id, "completed", "failed")
        assert job["status"] == "completed", job["error"]

        def stdout(job_id: str = job_id) -> list[str]:
            lines = server.client.get(f"/admin/jobs/{job_id}/logs").json()["lines"]
            return [line["text"] for line in lines if line["stream"] == "stdout"]

        # Lines are stored apart from the job's end (batched): wait for them.
        assert wait_until(lambda: stdout()[:1])[0] == "line 000001 xxxxxxxx"


def test_a_chain_step_that_is_no_object_is_named_readably(server: Server) -> None:
    answer = server.client.post("/admin/chains", json={"steps": [{"type": "quick"}, None]})
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["field"] == "steps[1]"
    assert error["message"] == "steps[1]: Expected `object`, got `null`"
