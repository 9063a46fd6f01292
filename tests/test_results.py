"""Large results: kept in the store, not in memory; left out of lists unless asked."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from supervisor.job import Job, Progress, new_job_id, now
from supervisor.state import JobStatus
from supervisor.store import Store
from supervisor.store.jobs import JobFilter
from supervisor.table import RESULT_KEPT_BYTES, JobTable
from tests.conftest import Server
from tests.helpers import group_body, removal


def _new_job() -> Job:
    return Job(
        id=new_job_id(),
        type="quick",
        status=JobStatus.PENDING,
        config=msgspec.Raw(b"{}"),
        progress=Progress(),
        created_at=now(),
    )


def test_a_finished_jobs_large_result_lives_in_the_store_only(tmp_path: Path) -> None:
    big = {"ids": [f"{i:012d}@s.whatsapp.net" for i in range(RESULT_KEPT_BYTES // 20)]}
    small = {"ids": ["one"]}

    async def scenario() -> None:
        store = Store(f"sqlite:///{tmp_path / 'x.db'}")
        store.migrate()
        table = JobTable(store)
        try:
            jobs = {}
            for name, result in (("big", big), ("small", small)):
                job = _new_job()
                await table.add(job, None, None, 100, "me")
                table.adopt(job)
                await table.move(job, JobStatus.RUNNING, started_at=now())
                await table.move(job, JobStatus.COMPLETED, result=result, completed_at=now())
                jobs[name] = job
            assert table.get(jobs["big"].id).result is None  # type: ignore[union-attr]
            assert table.get(jobs["small"].id).result == small  # type: ignore[union-attr]
            fetched = await table.fetch(jobs["big"].id)
            assert fetched is not None
            assert fetched.result == big
            assert fetched.status is JobStatus.COMPLETED
            listed = {j.id: j.result for j in await table.list(JobFilter())}
            assert listed == {jobs["big"].id: big, jobs["small"].id: small}
        finally:
            store.close()

    asyncio.run(scenario())


def test_lists_leave_results_out_unless_asked(server: Server) -> None:
    body = group_body(inactive=8000, active=1, admins_inactive=0)
    assert server.client.put("/admin/groups/big", json=body).status_code == 200
    job_id = server.start_job(removal("big", dryRun=True, batchSize=10_000))
    job = server.wait_status(job_id, "completed")
    assert len(job["result"]["wouldRemoveWhatsappIds"]) == 8000  # served from the store
    listed = server.client.get("/admin/jobs").json()
    assert [j["id"] for j in listed] == [job_id]
    assert "result" not in listed[0]
    assert listed[0]["status"] == "completed"
    full = server.client.get("/admin/jobs?include=result").json()
    assert len(full[0]["result"]["wouldRemoveWhatsappIds"]) == 8000
    error = server.client.get("/admin/jobs?include=everything").json()["error"]
    assert error["field"] == "include"
    assert server.client.get("/admin/jobs?include=result&limit=101").status_code == 400


def test_a_list_in_a_result_is_served_in_pages(server: Server) -> None:
    body = group_body(inactive=25, active=1, admins_inactive=0)
    assert server.client.put("/admin/groups/g", json=body).status_code == 200
    job_id = server.start_job(removal("g", dryRun=True, batchSize=100))
    whole = server.wait_status(job_id, "completed")["result"]["wouldRemoveWhatsappIds"]
    pages, offset = [], "0"
    while offset:
        response = server.client.get(
            f"/admin/jobs/{job_id}/result/wouldRemoveWhatsappIds?offset={offset}&limit=10"
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["total"] == 25
        assert page["offset"] == int(offset)
        pages.append(page["items"])
        offset = response.headers.get("x-next-offset", "")
    assert [len(p) for p in pages] == [10, 10, 5]
    assert [item for page in pages for item in page] == whole
    missing = server.client.get(f"/admin/jobs/{job_id}/result/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "list"
    assert server.client.get("/admin/jobs/nope/result/x").status_code == 404
