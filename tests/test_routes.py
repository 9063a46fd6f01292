"""The routes people reach for: groups listed and deleted, whitelists read, job types,
paged removals and members, rerun, deleting a finished job."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import Server, wait_until
from tests.helpers import group_body, removal

SLOW = {"type": "sleepy", "steps": 1, "stepMs": 60_000}


def put_group(server: Server, group: str, **members: int) -> None:
    response = server.client.put(f"/admin/groups/{group}", json=group_body(**members))
    assert response.status_code == 200, response.text


def first_batch_done(server: Server, job_id: str) -> None:
    """Wait for a slow removal's first batch (then it sleeps for its delay)."""
    wait_until(lambda: server.status(job_id)["progress"]["processed"] >= 1)


def all_pages(server: Server, path: str, limit: int, **query: str) -> list[Any]:
    """Every item of a paged list, following X-Next-Before; each page but the last is full."""
    items: list[Any] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = query | {"limit": limit} | ({"before": cursor} if cursor else {})
        response = server.client.get(path, params=params)
        assert response.status_code == 200, response.text
        cursor = response.headers.get("X-Next-Before")
        items += response.json()
        if cursor is None:
            return items
        assert len(response.json()) == limit


def test_job_types_describe_their_configs(server: Server) -> None:
    types = {t["name"]: t for t in server.client.get("/admin/job-types").json()}
    workflow = types["removal_workflow"]
    assert workflow["description"].startswith("Sync the group's members")
    schema = workflow["configSchema"]
    [definition] = schema["$defs"].values()
    assert {"groupWaId", "batchSize", "delayMs", "dryRun"} <= set(definition["properties"])
    assert "groupWaId" in definition["required"]
    assert types["quick"]["configSchema"]["$defs"]["QuickConfig"]["properties"]["value"] == {
        "type": "integer",
        "default": 0,
    }


def test_groups_are_listed_in_pages_with_their_counts(server: Server) -> None:
    for group in ("g3", "g1", "g2"):
        put_group(server, group, inactive=2)
    server.client.put("/admin/groups/g2/whitelist", json={"whatsappIds": ["in-000"]})
    first = server.client.get("/admin/groups?limit=2")
    assert [g["groupWaId"] for g in first.json()] == ["g1", "g2"]
    cursor = first.headers["X-Next-Before"]
    g2 = first.json()[1]
    assert (g2["memberCount"], g2["whitelistCount"], g2["inactiveCount"]) == (5, 1, 1)
    last = server.client.get(f"/admin/groups?limit=2&before={cursor}")
    assert [g["groupWaId"] for g in last.json()] == ["g3"]
    assert "X-Next-Before" not in last.headers
    assert server.client.get("/admin/groups").json() == first.json() + last.json()


def test_a_cursor_holds_any_id(server: Server) -> None:
    for group in ("grüppe ✓", "gz"):
        put_group(server, group, inactive=1)
    first = server.client.get("/admin/groups?limit=1")
    assert [g["groupWaId"] for g in first.json()] == ["grüppe ✓"]
    rest = server.client.get("/admin/groups", params={"before": first.headers["X-Next-Before"]})
    assert [g["groupWaId"] for g in rest.json()] == ["gz"]


def test_the_whitelist_reads_back_with_ids_that_are_not_members(server: Server) -> None:
    put_group(server, "g1", inactive=1)
    ids = ["in-000", "not-a-member"]
    assert server.client.put("/admin/groups/g1/whitelist", json={"whatsappIds": ids}).is_success
    answer = server.client.get("/admin/groups/g1/whitelist").json()
    assert answer == {"groupWaId": "g1", "whatsappIds": ids}
    assert server.client.get("/admin/groups/nope/whitelist").status_code == 404


def test_removals_and_members_page_through_a_whole_group(server: Server) -> None:
    put_group(server, "g1", inactive=7)
    job_id = server.start_job(removal("g1", batchSize=3))
    server.wait_status(job_id, "completed")
    removals = all_pages(server, "/admin/groups/g1/removals", 3)
    assert sorted(r["whatsappId"] for r in removals) == [f"in-{i:03d}" for i in range(7)]
    assert removals == server.client.get("/admin/groups/g1/removals").json()
    members = all_pages(server, "/admin/groups/g1/members", 4, includeRemoved="true")
    assert [m["whatsappId"] for m in members] == sorted(m["whatsappId"] for m in members)
    assert len(members) == 10
    assert [m["whatsappId"] for m in all_pages(server, "/admin/groups/g1/members", 2)] == [
        "ac-000",
        "ac-001",
        "ad-000",
    ]
    # "12345678": no such row; then not base64, and not even ASCII (once a 500)
    for cursor in ("MTIzNDU2Nzg", "not base64!", "%F0%B4%9A%AA"):
        unknown = server.client.get(f"/admin/groups/g1/removals?before={cursor}")
        assert unknown.status_code == 400
        assert unknown.json()["error"]["field"] == "before"


def test_a_rerun_repeats_the_config_and_checks_it_again(server: Server) -> None:
    original = server.start_job({"type": "quick", "value": 7})
    server.wait_status(original, "completed")
    response = server.client.post(f"/admin/jobs/{original}/rerun")
    assert response.status_code == 202, response.text
    assert response.json()["rerunOf"] == original
    again = server.wait_status(response.json()["jobId"], "completed")
    assert (again["config"], again["result"]) == ({"type": "quick", "value": 7}, {"value": 7})
    assert again["rerunOf"] == original
    assert server.status(original)["rerunOf"] is None
    listed = server.client.get("/admin/jobs?limit=1").json()[0]
    assert (listed["id"], listed["rerunOf"]) == (again["id"], original)
    # The checks run again: the group is gone, so the rerun is refused.
    put_group(server, "g1", inactive=1)
    removal_id = server.start_job(removal("g1"))
    server.wait_status(removal_id, "completed")
    assert server.client.delete("/admin/groups/g1").status_code == 204
    refused = server.client.post(f"/admin/jobs/{removal_id}/rerun")
    assert refused.status_code == 404
    assert refused.json()["error"]["field"] == "groupWaId"
    assert server.client.post("/admin/jobs/nope/rerun").status_code == 404


def test_only_a_finished_job_is_deleted(server: Server) -> None:
    job_id = server.start_job(SLOW)
    server.wait_status(job_id, "running")
    refused = server.client.delete(f"/admin/jobs/{job_id}")
    assert refused.status_code == 409, refused.text
    assert "running" in refused.json()["error"]["message"]
    server.client.post(f"/admin/jobs/{job_id}/cancel")
    server.wait_status(job_id, "cancelled")
    assert server.client.delete(f"/admin/jobs/{job_id}").status_code == 204
    assert server.client.get(f"/admin/jobs/{job_id}/status").status_code == 404
    assert job_id not in [j["id"] for j in server.client.get("/admin/jobs").json()]
    assert server.client.delete(f"/admin/jobs/{job_id}").status_code == 404


def test_a_group_with_a_live_job_is_not_deleted_and_its_history_stays(server: Server) -> None:
    put_group(server, "g1", inactive=3)
    job_id = server.start_job(removal("g1", batchSize=1, delayMs=60_000))
    first_batch_done(server, job_id)
    server.client.post(f"/admin/jobs/{job_id}/cancel")
    server.wait_status(job_id, "cancelled")
    history = server.client.get("/admin/groups/g1/removals").json()
    assert len(history) == 1  # the first batch, before the long delay

    second = server.start_job(removal("g1", batchSize=1, delayMs=60_000))
    first_batch_done(server, second)
    refused = server.client.delete("/admin/groups/g1")
    assert refused.status_code == 409, refused.text
    assert second in refused.json()["error"]["message"]
    assert server.client.get("/admin/groups/g1").status_code == 200
    server.client.post(f"/admin/jobs/{second}/cancel")
    server.wait_status(second, "cancelled")

    assert server.client.delete("/admin/groups/g1").status_code == 204
    assert server.client.get("/admin/groups/g1").status_code == 404
    assert server.client.get("/admin/groups/g1/members").status_code == 404
    assert server.client.get("/admin/groups").json() == []
    kept = server.client.get("/admin/groups/g1/removals").json()
    assert len(kept) == 2
    assert kept[1] == history[0]
    assert server.client.get("/admin/groups/nope/removals").status_code == 404
    assert len(server.client.get("/admin/jobs?groupWaId=g1").json()) == 2
    assert server.client.delete("/admin/groups/g1").status_code == 404


@pytest.mark.postgres
def test_deletes_across_instances_on_postgresql(
    pg_url: str, make_server: Callable[..., Server]
) -> None:
    a, b = (make_server(DATABASE_URL=pg_url) for _ in range(2))
    put_group(a, "g1", inactive=3)
    job_id = a.start_job(removal("g1", batchSize=1, delayMs=60_000))
    first_batch_done(a, job_id)
    mine = a.status(job_id)["owner"] == a.client.get("/healthz").json()["instance"]
    owner, other = (a, b) if mine else (b, a)
    other.wait_status(job_id, "running")
    # Whichever instance is asked, the store says a job is live for the group.
    assert other.client.delete("/admin/groups/g1").status_code == 409
    assert other.client.delete(f"/admin/jobs/{job_id}").status_code == 409
    other.client.post(f"/admin/jobs/{job_id}/cancel")
    owner.wait_status(job_id, "cancelled")

    # Two instances delete the same finished job, and the same group, at once: one wins.
    with ThreadPoolExecutor(4) as pool:
        jobs = pool.map(lambda s: s.client.delete(f"/admin/jobs/{job_id}").status_code, (a, b))
        groups = pool.map(lambda s: s.client.delete("/admin/groups/g1").status_code, (a, b))
        assert sorted(jobs) == [204, 404]
        assert sorted(groups) == [204, 404]
    # The instance that ran the job no longer serves it from memory.
    assert owner.client.get(f"/admin/jobs/{job_id}/status").status_code == 404
    assert len(other.client.get("/admin/groups/g1/removals").json()) == 1
