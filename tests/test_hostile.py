"""Hostile input on every route, on SQLite and PostgreSQL: a 4xx naming the field, never a 500.

One server per database serves the whole table; each case also checks that
nothing was half-written (no job, the group unchanged).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import PG_ADMIN_URL, Server
from tests.helpers import group_body, removal
from workers.db import connect

HUGE = 2**64 - 1
FAR_FUTURE = "9999-12-31T23:59:59-14:00"
FAR_PAST = "0001-01-01T00:00:00+14:00"
DEEP = b"[" * 2000 + b"]" * 2000
LONG = secrets.token_hex(1500)  # random: PostgreSQL cannot compress it under its index limit


def _start(**change: Any) -> dict[str, Any]:
    return removal("g1", **change)


def _member(**change: Any) -> dict[str, Any]:
    return {
        "name": "g",
        "members": [{"whatsappId": "m1", "joinedAt": "2020-01-01T00:00:00Z"} | change],
    }


# (method, path, JSON body or raw bytes or None, status, code, field)
CASES: list[tuple[str, str, Any, int, str, str | None]] = [
    # NUL in path ids
    ("GET", "/admin/jobs/a%00b/status", None, 400, "invalid_field", "jobId"),
    ("POST", "/admin/jobs/a%00b/cancel", None, 400, "invalid_field", "jobId"),
    ("GET", "/admin/jobs/a%00b/result/x", None, 400, "invalid_field", "jobId"),
    ("GET", "/admin/jobs/a/result/x%00", None, 400, "invalid_field", "list"),
    ("GET", "/admin/groups/g%00", None, 400, "invalid_field", "groupWaId"),
    ("PUT", "/admin/groups/g%00", group_body(1), 400, "invalid_field", "groupWaId"),
    ("GET", "/admin/groups/g%00/members", None, 400, "invalid_field", "groupWaId"),
    ("PUT", "/admin/groups/g%00/whitelist", {"whatsappIds": []}, 400, "invalid_field", "groupWaId"),
    ("GET", "/admin/groups/g%00/removals", None, 400, "invalid_field", "groupWaId"),
    # NUL in query parameters
    ("GET", "/admin/jobs?type=a%00", None, 400, "invalid_field", "type"),
    ("GET", "/admin/jobs?groupWaId=%00", None, 400, "invalid_field", "groupWaId"),
    ("GET", "/admin/jobs?before=%00", None, 400, "invalid_field", "before"),
    ("GET", "/admin/jobs?status=%00", None, 400, "invalid_field", "status"),
    ("GET", "/admin/groups/g1/removals?jobId=%00", None, 400, "invalid_field", "jobId"),
    (
        "GET",
        "/admin/groups/g1/members?includeRemoved=%00",
        None,
        400,
        "invalid_field",
        "includeRemoved",
    ),
    # NUL in body strings
    ("POST", "/admin/jobs/start", _start(groupWaId="g\x00"), 400, "invalid_field", "groupWaId"),
    ("POST", "/admin/jobs/start", _start(type="a\x00"), 400, "invalid_field", "type"),
    ("PUT", "/admin/groups/g1", {"name": "\x00", "members": []}, 400, "invalid_field", "name"),
    (
        "PUT",
        "/admin/groups/g1",
        _member(whatsappId="m\x00"),
        400,
        "invalid_field",
        "members[0].whatsappId",
    ),
    (
        "PUT",
        "/admin/groups/g1/whitelist",
        {"whatsappIds": ["\x00"]},
        400,
        "invalid_field",
        "whatsappIds[0]",
    ),
    # ids too long to index (PostgreSQL refuses index entries over about 2.7 KB)
    ("PUT", f"/admin/groups/{LONG}", group_body(1), 400, "invalid_field", "groupWaId"),
    ("GET", f"/admin/groups/{LONG}/members", None, 400, "invalid_field", "groupWaId"),
    ("GET", f"/admin/jobs/{LONG}/status", None, 400, "invalid_field", "jobId"),
    (
        "PUT",
        "/admin/groups/g1",
        _member(whatsappId=LONG),
        400,
        "invalid_field",
        "members[0].whatsappId",
    ),
    (
        "PUT",
        "/admin/groups/g1/whitelist",
        {"whatsappIds": [LONG]},
        400,
        "invalid_field",
        "whatsappIds[0]",
    ),
    ("POST", "/admin/jobs/start", _start(groupWaId=LONG), 400, "invalid_field", "groupWaId"),
    # deep nesting
    ("POST", "/admin/jobs/start", DEEP, 400, "invalid_field", None),
    (
        "POST",
        "/admin/jobs/start",
        b'{"type": "quick", "x": ' + DEEP + b"}",
        400,
        "invalid_json",
        None,
    ),
    ("PUT", "/admin/groups/g1", DEEP, 400, "invalid_field", None),
    ("PUT", "/admin/groups/g1/whitelist", DEEP, 400, "invalid_field", None),
    (
        "PUT",
        "/admin/groups/g1",
        b'{"name": "g", "members": [], "x": ' + DEEP + b"}",
        400,
        "invalid_field",
        "x",
    ),
    # extreme times
    (
        "PUT",
        "/admin/groups/g1",
        _member(joinedAt=FAR_FUTURE),
        400,
        "invalid_field",
        "members[0].joinedAt",
    ),
    (
        "PUT",
        "/admin/groups/g1",
        _member(lastActiveAt=FAR_PAST),
        400,
        "invalid_field",
        "members[0].lastActiveAt",
    ),
    (
        "GET",
        f"/admin/jobs?createdAfter={FAR_FUTURE.replace('+', '%2B')}",
        None,
        400,
        "invalid_field",
        "createdAfter",
    ),
    (
        "GET",
        "/admin/jobs?createdBefore=0001-01-01T00:00:00%2B14:00",
        None,
        400,
        "invalid_field",
        "createdBefore",
    ),
    # huge numbers
    ("POST", "/admin/jobs/start", _start(batchSize=HUGE), 400, "invalid_field", "batchSize"),
    ("POST", "/admin/jobs/start", _start(batchSize=10_001), 400, "invalid_field", "batchSize"),
    ("POST", "/admin/jobs/start", _start(delayMs=HUGE), 400, "invalid_field", "delayMs"),
    ("POST", "/admin/jobs/start", _start(delayMs=86_400_001), 400, "invalid_field", "delayMs"),
    (
        "POST",
        "/admin/jobs/start",
        _start(inactivityWindowMs=HUGE),
        400,
        "invalid_field",
        "inactivityWindowMs",
    ),
    (
        "POST",
        "/admin/jobs/start",
        _start(inactivityWindowMs=315_360_000_001),
        400,
        "invalid_field",
        "inactivityWindowMs",
    ),
    ("GET", f"/admin/jobs?limit={HUGE}", None, 400, "invalid_field", "limit"),
    (
        "GET",
        f"/admin/groups/g1?inactivityWindowMs={HUGE}",
        None,
        400,
        "invalid_field",
        "inactivityWindowMs",
    ),
    ("GET", f"/admin/groups/g1/removals?limit={HUGE}", None, 400, "invalid_field", "limit"),
    # unknown jobs: the id is the field at fault
    ("GET", "/admin/jobs/nope/status", None, 404, "not_found", "jobId"),
    ("POST", "/admin/jobs/nope/cancel", None, 404, "not_found", "jobId"),
    ("GET", "/admin/jobs/nope/result/items", None, 404, "not_found", "jobId"),
    ("GET", "/admin/jobs/nope/result/items?ofset=5", None, 400, "invalid_field", "ofset"),
    # paths and queries that are not UTF-8
    ("GET", "/admin/groups/%ff%fe", None, 400, "invalid_field", "path"),
    ("GET", "/admin/groups/%C0%AF", None, 400, "invalid_field", "path"),
    ("PUT", "/admin/groups/%ff%fe", group_body(1), 400, "invalid_field", "path"),
    ("GET", "/admin/jobs/%ff/status", None, 400, "invalid_field", "path"),
    ("POST", "/admin/jobs/%ed%a0%80/cancel", None, 400, "invalid_field", "path"),
    ("GET", "/admin/jobs?type=%ff", None, 400, "invalid_field", "type"),
]


def _server(tmp: Path, database_url: str) -> Iterator[Server]:
    server = Server({"DATABASE_URL": database_url}, tmp / "server.log").start()
    response = server.client.put("/admin/groups/g1", json=group_body(inactive=2))
    assert response.status_code == 200, response.text
    yield server
    server.stop()
    server.client.close()
    print(f"--- server log ---\n{server.log()}")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        yield from _server(tmp, f"sqlite:///{tmp / 'jobsup.db'}")
        return
    name = f"jobsup_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield from _server(tmp, f"postgresql://postgres@127.0.0.1:5432/{name}")
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _send(server: Server, method: str, path: str, body: Any) -> httpx.Response:
    if body is None:
        return server.client.request(method, path)
    if isinstance(body, bytes):
        return server.client.request(
            method, path, content=body, headers={"content-type": "application/json"}
        )
    return server.client.request(method, path, json=body)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code", "field"),
    CASES,
    ids=[f"{i}-{case[0]}-{case[5]}" for i, case in enumerate(CASES)],
)
def test_hostile_request_is_refused_naming_the_field(
    hostile: Server,
    method: str,
    path: str,
    body: Any,
    status: int,
    code: str,
    field: str | None,
) -> None:
    jobs_before = hostile.client.get("/admin/jobs").json()
    response = _send(hostile, method, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    if field is not None:
        assert error["field"] == field
    assert response.headers["cache-control"] == "no-store"
    # Nothing half-written: no job, the group as it was.
    assert hostile.client.get("/admin/jobs").json() == jobs_before
    assert hostile.client.get("/admin/groups/g1").json()["memberCount"] == 5
    assert hostile.client.get("/readyz").status_code == 200  # no refusal looks like an outage


def test_stored_extreme_times_still_read(hostile: Server) -> None:
    """Times stored before the door refused them are read back clamped, not a 500."""
    url = hostile.env["DATABASE_URL"]
    db = connect(url)
    try:
        with db.transaction():
            db.execute(
                "INSERT INTO wa_members (group_wa_id, whatsapp_id, is_admin, joined_at,"
                " last_active_at) VALUES (?, ?, ?, ?, ?)",
                ("g1", "zz-extreme", False, 253_402_351_199_000, -62_135_647_200_000),
            )
        response = hostile.client.get("/admin/groups/g1/members")
        assert response.status_code == 200, response.text
        extreme = next(m for m in response.json() if m["whatsappId"] == "zz-extreme")
        assert extreme["joinedAt"].startswith("9999-12-31T23:59:59")
        assert extreme["lastActiveAt"].startswith("0001-01-01T00:00:00")
        assert hostile.client.get("/admin/groups/g1").status_code == 200
    finally:
        with db.transaction():
            db.execute("DELETE FROM wa_members WHERE whatsapp_id = ?", ("zz-extreme",))
        db.close()


def test_valid_bounds_are_accepted(hostile: Server) -> None:
    body = _start(batchSize=10_000, delayMs=86_400_000, inactivityWindowMs=315_360_000_000)
    response = hostile.client.post("/admin/jobs/start", json=body | {"dryRun": True})
    assert response.status_code == 202, response.text
    hostile.wait_status(response.json()["jobId"], "completed")


def test_a_time_filter_with_an_unescaped_plus_is_read_as_its_offset(hostile: Server) -> None:
    """curl sends "+02:00" as is, and a query string decodes "+" as a space."""
    hostile.start_job({"type": "quick"})
    newest = hostile.client.get("/admin/jobs?limit=1").json()[0]["id"]
    after = hostile.client.get("/admin/jobs?createdAfter=2000-01-01T00:00:00+02:00&limit=1")
    assert after.status_code == 200, after.text
    assert after.json()[0]["id"] == newest
    before = hostile.client.get("/admin/jobs?createdBefore=2000-01-01T02:00:00+0200")
    assert before.status_code == 200, before.text
    assert before.json() == []


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/admin/jobs/start", b'{"type": "' + b"q" * 60_000 + b'"}', "type"),
        (
            "PUT",
            "/admin/groups/g9",
            b'{"name": "x", "members": [], "' + b"k" * 1_000_000 + b'": 1}',
            "k" * 1023 + "\u2026",
        ),
    ],
    ids=["unknown-type", "unknown-field"],
)
def test_a_refusal_does_not_echo_a_huge_name_back(
    hostile: Server, method: str, path: str, body: bytes, field: str
) -> None:
    response = _send(hostile, method, path, body)
    assert response.status_code == 400, response.text[:200]
    assert len(response.content) < 4096
    assert response.json()["error"]["field"] == field


def test_a_start_body_over_64_kib_is_refused(hostile: Server) -> None:
    """A config is kept in memory and sent in every list: megabytes of it are refused."""
    padding = "k" * (64 * 1024)
    response = hostile.client.post("/admin/jobs/start", json={"type": "sleepy", "key": padding})
    assert response.status_code == 413, response.text[:200]
    assert response.json()["error"]["code"] == "body_too_large"
    just_under = {"type": "sleepy", "steps": 0, "key": "k" * (60 * 1024)}
    assert hostile.client.post("/admin/jobs/start", json=just_under).status_code == 202
