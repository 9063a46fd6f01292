"""Chains, approval steps and removal plans, against a real server process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import VIEWER_TOKEN, Server
from tests.helpers import WINDOW_MS, group_body, iso_days_ago


def _chain(server: Server, *steps: dict[str, Any]) -> dict[str, Any]:
    response = server.client.post("/admin/chains", json={"steps": list(steps)})
    assert response.status_code == 202, response.text
    return dict(response.json())


def _chain_view(server: Server, chain_id: str) -> dict[str, Any]:
    response = server.client.get(f"/admin/chains/{chain_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_a_chain_of_three_survives_a_restart(make_server: Callable[..., Server]) -> None:
    server = make_server()
    started = _chain(
        server,
        {"type": "quick", "value": 1, "approval": True},
        {"type": "quick", "value": 2},
        {"type": "quick", "value": 3},
    )
    first, second, third = started["jobIds"]
    assert started["statuses"] == ["awaiting_approval", "waiting", "waiting"]
    view = _chain_view(server, started["chainId"])
    assert [s["id"] for s in view["steps"]] == [first, second, third]
    assert view["steps"][1]["after"] == {"jobId": first, "when": "completed"}
    assert all(s["chainId"] == started["chainId"] for s in view["steps"])
    listed = server.client.get("/admin/jobs", params={"chainId": started["chainId"]}).json()
    assert {j["id"] for j in listed} == {first, second, third}

    server.stop()
    server = make_server()  # the same database: the chain is stored, not remembered
    assert server.status(second)["status"] == "waiting"
    approved = server.client.post(f"/admin/jobs/{first}/approve")
    assert approved.status_code == 200, approved.text
    assert approved.json()["approval"]["approvedBy"]["name"] == "admin"
    for job_id, value in ((first, 1), (second, 2), (third, 3)):
        assert server.wait_status(job_id, "completed")["result"] == {"value": value}
    assert _chain_view(server, started["chainId"])["status"] == "completed"


def test_a_failed_parent_cancels_what_follows(server: Server) -> None:
    started = _chain(
        server,
        {"type": "crash", "how": "exception"},
        {"type": "quick"},
        {"type": "quick"},
    )
    first, second, third = started["jobIds"]
    assert server.wait_status(first, "failed")
    for job_id in (second, third):
        job = server.wait_status(job_id, "cancelled")
        assert job["cancel"]["reason"] == "dependency"
        assert job["error"]["reason"] == "dependency"
        assert job["startedAt"] is None
    # "finished" runs after any end.
    after_any = server.start_job({"type": "quick", "after": {"jobId": first, "when": "finished"}})
    assert server.wait_status(after_any, "completed")


def test_after_is_checked(server: Server) -> None:
    unknown = server.client.post(
        "/admin/jobs/start", json={"type": "quick", "after": {"jobId": "nope"}}
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"]["field"] == "after.jobId"
    parent = server.start_job({"type": "quick"})
    bad_when = server.client.post(
        "/admin/jobs/start", json={"type": "quick", "after": {"jobId": parent, "when": "soon"}}
    )
    assert bad_when.status_code == 400
    assert bad_when.json()["error"]["field"] == "after.when"
    linked = server.client.post(
        "/admin/chains",
        json={"steps": [{"type": "quick"}, {"type": "quick", "after": {"jobId": parent}}]},
    )
    assert linked.status_code == 400
    assert linked.json()["error"]["field"] == "steps[1].after.jobId"
    timed = server.client.post(
        "/admin/jobs/start", json={"type": "quick", "approval": True, "delayS": 5}
    )
    assert timed.status_code == 400
    assert timed.json()["error"]["field"] == "approval"
    assert server.client.get("/admin/jobs").json()[0]["id"] == parent  # nothing half-written


def test_cancelling_a_chain_and_rejecting_a_step(server: Server) -> None:
    started = _chain(server, {"type": "quick", "approval": True}, {"type": "quick"})
    answer = server.client.post(f"/admin/chains/{started['chainId']}/cancel")
    assert answer.status_code == 200, answer.text
    assert [s["status"] for s in answer.json()["steps"]] == ["cancelled", "cancelled"]

    step = server.start_job({"type": "quick", "approval": True})
    follower = server.start_job({"type": "quick", "after": {"jobId": step}})
    rejected = server.client.post(f"/admin/jobs/{step}/reject")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "cancelled"
    assert rejected.json()["approval"]["rejectedBy"]["name"] == "admin"
    assert server.status(follower)["cancel"]["reason"] == "dependency"
    again = server.client.post(f"/admin/jobs/{step}/approve")
    assert again.status_code == 409


def test_an_unapproved_step_expires(make_server: Callable[..., Server]) -> None:
    server = make_server(JOBSUP_PLAN_TTL_S="0.5")
    step = server.start_job({"type": "quick", "approval": True})
    job = server.wait_status(step, "cancelled")
    assert job["cancel"]["reason"] == "expired"


def test_the_removal_plan_flow(server: Server) -> None:
    body = group_body(inactive=3, active=1, admins_inactive=1)
    assert server.client.put("/admin/groups/g-plan", json=body).status_code == 200
    plan = server.client.post(
        "/admin/groups/g-plan/removal-plans",
        json={"batchSize": 2, "delayMs": 0, "inactivityWindowMs": WINDOW_MS},
    )
    assert plan.status_code == 202, plan.text
    dry_id, real_id = plan.json()["dryRunJobId"], plan.json()["removalJobId"]
    dry = server.wait_status(dry_id, "completed")
    pinned = dry["result"]["wouldRemoveWhatsappIds"]
    assert sorted(pinned) == ["in-000", "in-001", "in-002"]
    real = server.wait_status(real_id, "awaiting_approval")
    assert real["config"]["onlyWhatsappIds"] == pinned

    # Between review and approval: in-001 speaks again, ac-000 falls silent.
    members = body["members"]
    for member in members:
        if member["whatsappId"] == "in-001":
            member["lastActiveAt"] = iso_days_ago(0)
        if member["whatsappId"] == "ac-000":
            member["lastActiveAt"] = iso_days_ago(90)
    assert server.client.put("/admin/groups/g-plan", json=body).status_code == 200
    whitelist = {"whatsappIds": ["in-002"]}
    assert server.client.put("/admin/groups/g-plan/whitelist", json=whitelist).status_code == 200

    refused = server.client.post(
        f"/admin/jobs/{real_id}/approve", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}
    )
    assert refused.status_code == 403
    assert server.status(real_id)["status"] == "awaiting_approval"
    assert server.client.post(f"/admin/jobs/{real_id}/approve").status_code == 200
    done = server.wait_status(real_id, "completed")
    assert done["result"]["removedWhatsappIds"] == ["in-000"]
    assert sorted(done["result"]["skippedWhatsappIds"]) == ["in-001", "in-002"]

    history = server.client.get("/admin/groups/g-plan/removals", params={"jobId": real_id}).json()
    outcomes = {row["whatsappId"]: (row["outcome"], row["reason"]) for row in history}
    assert set(outcomes) == {"in-000", "in-001", "in-002"}  # ac-000: never on the plan
    assert outcomes["in-001"][0] == "FAILURE"
    assert "active again" in outcomes["in-001"][1]
    assert outcomes["in-002"] == ("FAILURE", "skipped: whitelisted since the plan was reviewed")
    assert outcomes["in-000"][0] == "SUCCESS"
    members_now = server.client.get("/admin/groups/g-plan/members").json()
    assert "ac-000" in {m["whatsappId"] for m in members_now}  # still a member


@pytest.mark.postgres
def test_a_chain_goes_on_across_instances(make_server: Callable[..., Server], pg_url: str) -> None:
    one = make_server(DATABASE_URL=pg_url)
    two = make_server(DATABASE_URL=pg_url)
    started = _chain(
        one,
        {"type": "quick", "value": 1, "approval": True},
        {"type": "quick", "value": 2},
        {"type": "crash", "how": "exception"},
        {"type": "quick", "value": 4},
    )
    first, second, third, fourth = started["jobIds"]
    assert two.client.post(f"/admin/jobs/{first}/approve").status_code == 200
    assert two.wait_status(second, "completed")["result"] == {"value": 2}
    assert two.wait_status(third, "failed")
    assert one.wait_status(fourth, "cancelled")["cancel"]["reason"] == "dependency"
    view = _chain_view(one, started["chainId"])
    assert [s["status"] for s in view["steps"]] == ["completed", "completed", "failed", "cancelled"]


def test_the_event_stream_tells_each_step_of_a_chain(server: Server) -> None:
    from tests.test_events import parse

    seen: list[tuple[str, str, str]] = []
    with server.client.stream("GET", "/admin/jobs/events") as response:
        lines = response.iter_lines()
        started = _chain(
            server,
            {"type": "quick", "approval": True},
            {"type": "quick", "approval": True},
            {"type": "crash", "how": "exception"},
            {"type": "quick"},
        )
        first, second, third, fourth = started["jobIds"]
        assert server.client.post(f"/admin/jobs/{first}/approve").status_code == 200
        for event in parse(lines):
            if event.kind == ":":
                continue
            job_id = event.data.get("id", event.data.get("jobId"))
            seen.append((event.kind, job_id, event.data.get("status")))
            if (event.kind, job_id, event.data.get("status")) == (
                "released",
                second,
                "awaiting_approval",
            ):
                assert server.client.post(f"/admin/jobs/{second}/approve").status_code == 200
            if event.kind == "finished" and job_id == fourth:
                break
    assert ("approved", first, "pending") in seen
    assert ("released", second, "awaiting_approval") in seen
    assert ("released", third, "pending") in seen
    assert ("finished", third, "failed") in seen
    assert ("finished", fourth, "cancelled") in seen


def test_a_plan_is_refused_in_its_own_fields(server: Server) -> None:
    body = {"batchSize": 2, "delayMs": 0, "inactivityWindowMs": WINDOW_MS}
    unknown = server.client.post("/admin/groups/g-none/removal-plans", json=body)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "groupWaId"
    assert server.client.put("/admin/groups/g-bad", json=group_body(inactive=1)).status_code == 200
    bad = server.client.post("/admin/groups/g-bad/removal-plans", json={**body, "batchSize": 0})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "batchSize"
    assert server.client.get("/admin/jobs").json() == []  # nothing half-written


def test_a_chain_start_is_audited_once_per_step(server: Server) -> None:
    started = _chain(server, {"type": "quick"}, {"type": "quick"})
    entries = server.client.get("/admin/audit", params={"action": "chain.start"}).json()
    assert sorted(e["target"] for e in entries) == sorted(started["jobIds"])


def test_held_jobs_are_in_the_stream_s_snapshot(server: Server) -> None:
    from tests.test_events import parse

    step = server.start_job({"type": "quick", "approval": True})
    url = "/admin/jobs/events?status=awaiting_approval"
    with server.client.stream("GET", url) as response:
        assert response.status_code == 200
        first = next(e for e in parse(response.iter_lines()) if e.kind != ":")
    assert (first.kind, first.data["id"], first.data["status"]) == (
        "snapshot",
        step,
        "awaiting_approval",
    )
