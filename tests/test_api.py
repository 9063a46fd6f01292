"""The HTTP contract, against a real server in a subprocess."""

from __future__ import annotations

import socket
from typing import Any

import msgspec
import pytest

from tests.conftest import RAW_AUTH, Server
from tests.helpers import group_body, removal


@pytest.fixture
def api(server: Server) -> Server:
    response = server.client.put("/admin/groups/g1", json=group_body(inactive=3))
    assert response.status_code == 200, response.text
    return server


def test_healthz(server: Server) -> None:
    body = server.client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["runningJobs"] == 0


def test_start_and_status_shape(api: Server) -> None:
    response = api.client.post("/admin/jobs/start", json=removal("g1"))
    assert response.status_code == 202
    started = response.json()
    assert started["status"] == "pending"
    assert started["message"]
    job = api.wait_status(started["jobId"], "completed")
    assert set(job) >= {
        "id",
        "type",
        "status",
        "config",
        "progress",
        "result",
        "error",
        "cancel",
        "pid",
        "createdAt",
        "startedAt",
        "completedAt",
    }
    assert job["type"] == "removal_workflow"
    assert job["config"]["groupWaId"] == "g1"
    assert job["config"]["batchSize"] == 2
    assert job["pid"] is None  # only while it runs
    assert job["error"] is None
    assert job["cancel"] is None
    assert job["createdAt"] <= job["startedAt"] <= job["completedAt"]
    assert job["createdAt"].endswith(("Z", "+00:00"))
    assert sorted(job["result"]["removedWhatsappIds"]) == ["in-000", "in-001", "in-002"]
    assert job["progress"]["processed"] == 3


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"]
    assert body["error"]["message"]
    return dict(body["error"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"batchSize": None}, "batchSize"),
        ({"batchSize": "2"}, "batchSize"),
        ({"batchSize": 0}, "batchSize"),
        ({"batchSize": -1}, "batchSize"),
        ({"inactivityWindowMs": 0}, "inactivityWindowMs"),
        ({"dryRun": "yes"}, "dryRun"),
        ({"groupWaId": 5}, "groupWaId"),
        ({"type": "nope"}, "type"),
        ({"type": None}, "type"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_start_rejects_bad_fields(api: Server, change: dict[str, Any], field: str) -> None:
    body = removal("g1")
    for key, value in change.items():
        if value is None:
            del body[key]
        else:
            body[key] = value
    error = _error(api.client.post("/admin/jobs/start", json=body), 400)
    assert error["field"] == field
    assert field in error["message"]
    assert api.client.get("/admin/jobs").json() == []  # nothing half-written


def test_start_rejects_a_missing_window_only_for_the_workflow(api: Server) -> None:
    body = removal("g1")
    del body["inactivityWindowMs"]
    assert _error(api.client.post("/admin/jobs/start", json=body), 400)["field"] == (
        "inactivityWindowMs"
    )
    body["type"] = "removal_queue"
    assert api.client.post("/admin/jobs/start", json=body).status_code == 202


def test_delay_below_the_rate_limit_floor(make_server: Any) -> None:
    server = make_server(JOBSUP_MIN_DELAY_MS="10000")
    server.client.put("/admin/groups/g1", json=group_body(inactive=1))
    error = _error(server.client.post("/admin/jobs/start", json=removal("g1", delayMs=9999)), 400)
    assert error["field"] == "delayMs"
    assert "10000" in error["message"]
    ok = server.client.post("/admin/jobs/start", json=removal("g1", delayMs=10000, dryRun=True))
    assert ok.status_code == 202


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "invalid_json"),
        (b"", {"content-type": "application/json"}, 400, "invalid_json"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "invalid_field"),
        (
            b'{"type": "removal_workflow"}',
            {"content-type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
    ],
)
def test_start_rejects_bad_bodies(
    api: Server, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = api.client.post("/admin/jobs/start", content=content, headers=headers)
    assert _error(response, status)["code"] == code


def test_unknown_group_is_404_at_start(api: Server) -> None:
    error = _error(api.client.post("/admin/jobs/start", json=removal("nope")), 404)
    assert error["field"] == "groupWaId"
    assert api.client.get("/admin/jobs").json() == []


def test_second_removal_for_a_group_is_409(api: Server) -> None:
    first = api.start_job(removal("g1", delayMs=60_000, batchSize=1))
    api.wait_status(first, "running")
    queue_body = removal("g1", type="removal_queue")
    del queue_body["inactivityWindowMs"]
    second = api.client.post("/admin/jobs/start", json=queue_body)
    error = _error(second, 409)
    assert "group:g1" in error["message"]
    api.client.put("/admin/groups/g2", json=group_body(inactive=1))
    assert api.client.post("/admin/jobs/start", json=removal("g2", dryRun=True)).status_code == 202
    assert api.client.post(f"/admin/jobs/{first}/cancel").json()["status"] == "cancelled"
    # Once the first has ended, the group is free again.
    assert api.client.post("/admin/jobs/start", json=removal("g1", dryRun=True)).status_code == 202


def test_unknown_job_is_404(api: Server) -> None:
    assert _error(api.client.get("/admin/jobs/nope/status"), 404)["code"] == "not_found"
    assert _error(api.client.post("/admin/jobs/nope/cancel"), 404)["code"] == "not_found"


def test_list_newest_first_with_filters(api: Server) -> None:
    ids = [api.start_job({"type": "quick", "value": i}) for i in range(3)]
    for job_id in ids:
        api.wait_status(job_id, "completed")
    listed = api.client.get("/admin/jobs").json()
    assert [j["id"] for j in listed] == ids[::-1]
    assert [j["id"] for j in api.client.get("/admin/jobs?limit=2").json()] == ids[:0:-1]
    assert api.client.get("/admin/jobs?status=failed").json() == []
    assert len(api.client.get("/admin/jobs?status=completed&type=quick").json()) == 3
    assert api.client.get("/admin/jobs?type=removal_queue").json() == []
    older = api.client.get(f"/admin/jobs?before={ids[2]}").json()
    assert [j["id"] for j in older] == ids[1::-1]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("status=bogus", "status"),
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("createdAfter=yesterday", "createdAfter"),
        ("colour=red", "colour"),
    ],
)
def test_list_rejects_bad_queries(api: Server, query: str, field: str) -> None:
    assert _error(api.client.get(f"/admin/jobs?{query}"), 400)["field"] == field


def test_unknown_route_and_method_are_json_errors(api: Server) -> None:
    assert _error(api.client.get("/nope"), 404)["code"] == "not_found"
    assert _error(api.client.delete("/admin/jobs"), 405)["code"] == "method_not_allowed"


def test_groups(api: Server) -> None:
    summary = api.client.get("/admin/groups/g1").json()
    assert summary["memberCount"] == 6
    assert summary["inactiveCount"] == 3  # the inactive admin is never counted
    assert summary["queuedCount"] == 0
    members = api.client.get("/admin/groups/g1/members").json()
    assert len(members) == 6
    response = api.client.put("/admin/groups/g1/whitelist", json={"whatsappIds": ["in-000"]})
    assert response.status_code == 200
    assert api.client.get("/admin/groups/g1").json()["inactiveCount"] == 2
    job_id = api.start_job(removal("g1"))
    api.wait_status(job_id, "completed")
    history = api.client.get("/admin/groups/g1/removals").json()
    assert sorted(r["whatsappId"] for r in history) == ["in-001", "in-002"]
    assert {r["outcome"] for r in history} == {"SUCCESS"}
    assert {r["jobId"] for r in history} == {job_id}
    assert len(api.client.get("/admin/groups/g1/members").json()) == 4
    everyone = api.client.get("/admin/groups/g1/members?includeRemoved=true").json()
    assert len(everyone) == 6
    assert _error(api.client.get("/admin/groups/zz"), 404)["field"] == "groupWaId"
    assert _error(api.client.get("/admin/groups/zz/members"), 404)["code"] == "not_found"
    bad = api.client.put("/admin/groups/g1", json={"name": "x", "members": [{"whatsappId": ""}]})
    assert _error(bad, 400)["field"].startswith("members")


def test_405_names_the_allowed_methods(api: Server) -> None:
    response = api.client.post("/admin/groups/g1")
    assert _error(response, 405)["code"] == "method_not_allowed"
    # Three routes share the path (PUT, GET, DELETE): the answer names them all.
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "PUT", "DELETE"}
    assert _error(api.client.get("/admin/jobs/start"), 405)
    assert "POST" in api.client.get("/admin/jobs/start").headers["allow"]


def test_api_answers_carry_the_safety_headers(api: Server) -> None:
    for response in (
        api.client.get("/admin/groups/g1"),
        api.client.get("/nope"),
        api.client.post("/admin/jobs/start", content=b"{", headers={"content-type": "text/x"}),
    ):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "server" not in response.headers


def _raw(server: Server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_malformed_http_gets_the_error_envelope(api: Server) -> None:
    answer = _raw(api, b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/json" in head.lower()
    assert msgspec.json.decode(body)["error"]["code"] == "bad_request"


def test_an_endless_header_is_cut_off(api: Server) -> None:
    """The server stops reading a head past 64 KiB (answering 431 if the client still reads)."""
    sent, answer = 0, b""
    with socket.create_connection(("127.0.0.1", api.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            while sent < 4_000_000:
                sock.sendall(b"a" * 16_384)
                sent += 16_384
            answer = sock.recv(65_536)
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert sent < 4_000_000
    if answer:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431")
        assert msgspec.json.decode(body)["error"]["code"] == "headers_too_large"
    assert api.client.get("/healthz").status_code == 200


def test_rejected_starts_log_no_error(make_server: Any) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1", JOBSUP_MAX_PENDING_JOBS="1")
    holder = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000, "key": "k"})
    server.wait_status(holder, "running")
    waiting = server.start_job({"type": "quick"})
    for _ in range(20):
        assert server.client.post("/admin/jobs/start", json={"type": "quick"}).status_code == 429
        conflict = server.client.post("/admin/jobs/start", json={"type": "sleepy", "key": "k"})
        assert conflict.status_code in (409, 429)
    # A client that goes away mid-body is not an error of ours either.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /admin/jobs/start HTTP/1.1\r\n"
            + RAW_AUTH
            + b'content-type: application/json\r\ncontent-length: 100\r\n\r\n{"type"'
        )
    assert server.client.post(f"/admin/jobs/{holder}/cancel").status_code == 200
    server.wait_status(waiting, "completed")
    assert server.client.get("/healthz").status_code == 200
    log = server.log()
    assert " ERROR " not in log, log
    assert "ERROR:" not in log, log
    assert "never retrieved" not in log
    assert "Traceback" not in log
