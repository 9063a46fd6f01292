"""The audit trail from outside: each recorded action, who, from where, paging, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from supervisor.job import RequestedBy
from supervisor.store import access, claims
from supervisor.store import jobs as sql
from supervisor.store.migrations import migrate
from tests.conftest import ADMIN_TOKEN, OPERATOR_TOKEN, VIEWER_TOKEN, Server, wait_until
from tests.helpers import pending_job
from tests.test_auth import GROUP, SLEEPY, anonymous, bearer, fingerprint
from workers.db import connect


def audit(server: Server, **params: Any) -> list[dict[str, Any]]:
    answer = server.client.get("/admin/audit", params=params)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()
    return entries


def only(entries: list[dict[str, Any]], action: str) -> dict[str, Any]:
    found = [e for e in entries if e["action"] == action]
    assert len(found) == 1, (action, entries)
    return found[0]


def test_each_recorded_action_names_who_where_what_and_the_outcome(server: Server) -> None:
    operator = bearer(OPERATOR_TOKEN)
    with anonymous(server) as client:
        started = client.post("/admin/jobs/start", json=SLEEPY, headers=operator)
        job_id = started.json()["jobId"]
        server.wait_status(job_id, "running")
        assert client.post(f"/admin/jobs/{job_id}/cancel", headers=operator).status_code in (
            200,
            202,
        )
        assert (
            client.post("/admin/jobs/start", json={"type": "nope"}, headers=operator).status_code
            == 400
        )
        assert client.put("/admin/groups/g1", json=GROUP, headers=operator).status_code == 403
        assert (
            client.get("/admin/jobs", headers=bearer("wrong-token-0123456789")).status_code == 401
        )
        login = client.post("/admin/session", json={"token": VIEWER_TOKEN})
        assert login.status_code == 200
        assert client.delete("/admin/session", headers={"origin": server.url}).status_code == 204
    assert server.client.put("/admin/groups/g1", json=GROUP).status_code == 200
    whitelist = {"whatsappIds": ["1@s.whatsapp.net"]}
    assert server.client.put("/admin/groups/g1/whitelist", json=whitelist).status_code == 200

    entries = audit(server)
    assert [e["action"] for e in entries] == [
        "whitelist.put",
        "group.put",
        "session.logout",
        "session.login",
        "auth.failed",
        "auth.forbidden",
        "job.start",
        "job.cancel",
        "job.start",
    ]
    assert entries == sorted(entries, key=lambda e: e["id"], reverse=True)  # newest first
    for e in entries:
        assert e["peer"] == "127.0.0.1"
        assert datetime.fromisoformat(e["at"]) > datetime.now(UTC) - timedelta(minutes=5)
    as_operator = {
        "who": "operator",
        "role": "operator",
        "fingerprint": fingerprint(OPERATOR_TOKEN),
    }
    accepted = entries[-1]
    assert accepted | as_operator == accepted
    assert (accepted["target"], accepted["outcome"]) == (job_id, 202)
    cancel = only(entries, "job.cancel")
    assert cancel | as_operator == cancel
    assert cancel["target"] == job_id
    assert cancel["outcome"] in (200, 202)
    refused_start = entries[-3]
    assert (refused_start["action"], refused_start["outcome"], refused_start["target"]) == (
        "job.start",
        400,
        None,
    )
    forbidden = only(entries, "auth.forbidden")
    assert forbidden | as_operator == forbidden
    assert (forbidden["target"], forbidden["outcome"]) == ("PUT /admin/groups/g1", 403)
    failed = only(entries, "auth.failed")
    assert (failed["who"], failed["role"], failed["fingerprint"]) == ("anonymous", None, None)
    assert (failed["target"], failed["outcome"]) == ("GET /admin/jobs", 401)
    login = only(entries, "session.login")
    assert (login["who"], login["fingerprint"], login["outcome"]) == (
        "viewer",
        fingerprint(VIEWER_TOKEN),
        200,
    )
    assert only(entries, "session.logout")["outcome"] == 204
    as_admin = {"who": "admin", "role": "admin", "fingerprint": fingerprint(ADMIN_TOKEN)}
    for action in ("group.put", "whitelist.put"):
        change = only(entries, action)
        assert change | as_admin == change
        assert (change["target"], change["outcome"]) == ("g1", 200)
    text = server.client.get("/admin/audit").text
    for token in (ADMIN_TOKEN, OPERATOR_TOKEN, VIEWER_TOKEN, "wrong-token-0123456789"):
        assert token not in text

    # The job says who started it and who cancelled it.
    job = server.wait_status(job_id, "cancelled")
    who = {"name": "operator", "role": "operator", "fingerprint": fingerprint(OPERATOR_TOKEN)}
    assert job["requestedBy"] == who
    assert job["cancel"]["requestedBy"] == who
    listed = server.client.get("/admin/jobs").json()
    assert listed[0]["requestedBy"] == who


def test_filters_and_paging(server: Server) -> None:
    for i in range(5):
        assert server.client.put(f"/admin/groups/g{i}", json=GROUP).status_code == 200
    server.start_job({"type": "quick"})
    with anonymous(server) as client:
        client.post("/admin/jobs/start", json={"type": "quick"}, headers=bearer(OPERATOR_TOKEN))

    assert [e["target"] for e in audit(server, action="group.put")] == [
        f"g{i}" for i in reversed(range(5))
    ]
    starts = audit(server, action="job.start")
    assert [e["who"] for e in starts] == ["operator", "admin"]
    assert [e["who"] for e in audit(server, who="operator")] == ["operator"]
    assert [e["who"] for e in audit(server, who=fingerprint(OPERATOR_TOKEN))] == ["operator"]
    newest = starts[0]["at"]
    assert starts[0] in audit(server, since=newest, action="job.start")
    older = audit(server, until=newest)
    assert all(datetime.fromisoformat(e["at"]) < datetime.fromisoformat(newest) for e in older)
    assert len(older) >= 5  # the group changes came first

    # Pages of two, by the X-Next-Before cursor, like the job list.
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = server.client.get("/admin/audit", params=params)
        seen += page.json()
        if "x-next-before" not in page.headers:
            break
        params["before"] = page.headers["x-next-before"]
    assert seen == audit(server)
    assert len(seen) == 7

    for bad in ({"limit": "0"}, {"since": "yesterday"}, {"colour": "red"}):
        refused = server.client.get("/admin/audit", params=bad)
        assert refused.status_code == 400
        assert refused.json()["error"]["field"] == next(iter(bad))


def test_the_peer_is_the_socket_unless_the_proxy_is_trusted(make_server: Any) -> None:
    forwarded = {"x-forwarded-for": "203.0.113.7"}
    for env, peer in (({}, "127.0.0.1"), ({"JOBSUP_TRUST_PROXY": "1"}, "203.0.113.7")):
        server = make_server(**env)
        assert (
            server.client.put("/admin/groups/g", json=GROUP, headers=forwarded).status_code == 200
        )
        assert audit(server)[0]["peer"] == peer
        server.stop()  # one server per SQLite file


def test_audit_entries_follow_the_retention_setting(make_server: Any) -> None:
    server = make_server(JOBSUP_RETENTION_DAYS="0.00001", JOBSUP_CLEANUP_INTERVAL_S="0.2")
    assert server.client.put("/admin/groups/g", json=GROUP).status_code == 200
    assert len(audit(server)) == 1
    wait_until(lambda: audit(server) == [], timeout=15)  # older than about a second: pruned


def test_only_an_admin_reads_the_trail(server: Server) -> None:
    with anonymous(server) as client:
        for token in (VIEWER_TOKEN, OPERATOR_TOKEN):
            assert client.get("/admin/audit", headers=bearer(token)).status_code == 403
        assert client.get("/admin/audit").status_code == 401


@pytest.mark.postgres
def test_a_cancel_across_instances_says_who_asked(pg_url: str, make_server: Any) -> None:
    cluster = {"JOBSUP_HEARTBEAT_S": "0.3", "JOBSUP_NODE_TIMEOUT_S": "2"}
    a, b = (make_server(DATABASE_URL=pg_url, **cluster) for _ in range(2))
    job_id = a.start_job(SLEEPY)
    job = a.wait_status(job_id, "running")
    other = b if job["owner"] == a.client.get("/healthz").json()["instance"] else a
    other.wait_status(job_id, "running")
    with anonymous(other) as client:
        cancel = client.post(f"/admin/jobs/{job_id}/cancel", headers=bearer(OPERATOR_TOKEN))
    assert cancel.status_code in (200, 202), cancel.text
    done = other.wait_status(job_id, "cancelled")
    who = {"name": "operator", "role": "operator", "fingerprint": fingerprint(OPERATOR_TOKEN)}
    assert done["cancel"]["requestedBy"] == who
    assert done["requestedBy"]["name"] == "admin"


def test_a_cancel_request_left_in_the_store_carries_who_asked(tmp_path: Path) -> None:
    """The owner's poll (when a NOTIFY is missed) and the NOTIFY payload both carry it."""
    who = RequestedBy("ci", "operator", "9f86d081")
    db = connect(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        migrate(db, {"jobs": sql.MIGRATIONS, "access": access.MIGRATIONS})
        job = pending_job("quick")
        sql.insert_job(db, job, None, None, 0, 100, claim_for="me")
        request = {"requestedAt": "2026-01-01T00:00:00Z", "reason": "user", "requestedBy": who}
        assert claims.request_cancel(db, job.id, request, 1)
        assert claims.cancel_requests(db, "me") == [(job.id, "user", who)]
    finally:
        db.close()
    payload = f"{job.id} user " + msgspec.json.encode(who).decode()
    assert claims.parse_cancel_note(payload) == (job.id, "user", who)
    assert claims.parse_cancel_note(f"{job.id} user null") == (job.id, "user", None)
    assert claims.parse_cancel_note(f"{job.id} user") == (job.id, "user", None)


def test_reruns_deletes_and_group_deletes_are_recorded(server: Server) -> None:
    original = server.start_job({"type": "quick"})
    server.wait_status(original, "completed")
    with anonymous(server) as client:
        operator = bearer(OPERATOR_TOKEN)
        rerun = client.post(f"/admin/jobs/{original}/rerun", headers=operator)
        assert rerun.status_code == 202, rerun.text
        again = rerun.json()["jobId"]
        job = server.wait_status(again, "completed")
        assert job["requestedBy"]["fingerprint"] == fingerprint(OPERATOR_TOKEN)
        assert job["rerunOf"] == original
        assert client.delete(f"/admin/jobs/{original}", headers=operator).status_code == 204
    assert server.client.put("/admin/groups/g", json=GROUP).status_code == 200
    assert server.client.delete("/admin/groups/g").status_code in (200, 204)
    entries = audit(server)
    assert [(e["action"], e["target"], e["who"]) for e in entries[:4]] == [
        ("group.delete", "g", "admin"),
        ("group.put", "g", "admin"),
        ("job.delete", original, "operator"),
        ("job.rerun", again, "operator"),
    ]
