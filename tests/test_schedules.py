"""Recurring schedules through the real server: the routes, their refusals, and firing.

A tick is brought forward by setting the schedule's ``next_fire_at`` to now
in the database (``_tick_now``): the server fires it as it fires a real
tick, at its next look (within one poll period), without a minute's wait.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from supervisor.api import schedules as routes
from supervisor.api.access import Role, role_of
from tests.conftest import Server, wait_until
from tests.helpers import group_body, removal
from tests.test_client import jobsup
from workers.db import connect
from workers.times import from_ms, iso, now_ms

FAST_TICKS = {"JOBSUP_POLL_S": "0.2"}
WEEKLY = {"cron": "0 3 * * 1", "timezone": "America/Sao_Paulo", "job": {"type": "quick"}}


def _tick_now(url: str, name: str, at_ms: int | None = None) -> int:
    """Make the schedule's next tick due now; returns the tick's time (ms)."""
    at = now_ms() if at_ms is None else at_ms
    db = connect(url)
    try:
        assert db.execute("UPDATE schedules SET next_fire_at = ? WHERE name = ?", (at, name)) == 1
    finally:
        db.close()
    return at


def _recent(server: Server, name: str, count: int) -> list[dict[str, Any]]:
    """The schedule's ticks, newest first, once there are ``count`` of them."""

    def enough() -> list[dict[str, Any]] | None:
        response = server.client.get(f"/admin/schedules/{name}")
        assert response.status_code == 200, response.text
        recent = response.json()["recent"]
        return recent if len(recent) >= count else None

    return list(wait_until(enough, timeout=15))


def test_put_get_list_delete(server: Server) -> None:
    created = server.client.put("/admin/schedules/weekly", json=WEEKLY)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "weekly"
    assert body["cron"] == "0 3 * * 1"
    assert body["timezone"] == "America/Sao_Paulo"
    assert body["job"] == {"type": "quick"}
    assert (body["enabled"], body["catchUp"]) == (True, "one")
    # Monday 03:00 in São Paulo (UTC-3) is 06:00 UTC, five of them a week apart.
    assert len(body["upcoming"]) == 5
    assert body["upcoming"][0] == body["nextFireAt"]
    assert all(t.endswith("T06:00:00.000Z") for t in body["upcoming"])
    assert body["recent"] == []

    got = server.client.get("/admin/schedules/weekly").json()
    assert got == body

    replaced = server.client.put(
        "/admin/schedules/weekly", json={**WEEKLY, "enabled": False, "catchUp": "none"}
    )
    assert replaced.status_code == 200, replaced.text
    assert (replaced.json()["enabled"], replaced.json()["catchUp"]) == (False, "none")
    assert replaced.json()["nextFireAt"] is None
    assert replaced.json()["upcoming"] == []

    server.client.put("/admin/schedules/daily", json={**WEEKLY, "cron": "@daily"})
    listed = server.client.get("/admin/schedules").json()
    assert [s["name"] for s in listed] == ["daily", "weekly"]
    assert "upcoming" not in listed[0]
    first = server.client.get("/admin/schedules", params={"limit": 1})
    assert [s["name"] for s in first.json()] == ["daily"]
    second = server.client.get(
        "/admin/schedules", params={"limit": 1, "before": first.headers["X-Next-Before"]}
    )
    assert [s["name"] for s in second.json()] == ["weekly"]
    assert "X-Next-Before" not in second.headers
    not_ascii = server.client.get("/admin/schedules?before=%F0%B4%9A%AA")  # once a 500
    assert not_ascii.status_code == 400
    assert not_ascii.json()["error"]["field"] == "before"

    assert server.client.delete("/admin/schedules/weekly").status_code == 204
    missing = server.client.get("/admin/schedules/weekly")
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "name"
    assert server.client.delete("/admin/schedules/weekly").status_code == 404


BAD = [
    ({"cron": "0 3 * *"}, "cron"),
    ({"cron": "61 3 * * 1"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"cron": 5}, "cron"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": "../../etc/passwd"}, "timezone"),
    ({"job": {"type": "nope"}}, "job.type"),
    ({"job": {"type": "sleepy", "steps": "many"}}, "job.steps"),
    ({"job": {"type": "sleepy", "bogus": 1}}, "job.bogus"),
    ({"job": removal("no-such-group")}, "job.groupWaId"),
    ({"job": removal("g1", delayMs=-1)}, "job.delayMs"),
    ({"job": [1]}, "job"),
    ({"catchUp": "all"}, "catchUp"),
    ({"enabled": "yes"}, "enabled"),
    ({"every": "5s"}, "every"),
    ({"timezone": "UTC\x00"}, "timezone"),
    ({"job": {"type": "quick\x00"}}, "job.type"),
    ({"cron": "0 3 * * 1\x00"}, "cron"),
]


def test_a_bad_schedule_is_refused_naming_the_field_and_nothing_is_stored(server: Server) -> None:
    for change, field in BAD:
        response = server.client.put("/admin/schedules/s1", json={**WEEKLY, **change})
        assert response.status_code == 400, (change, response.text)
        assert response.json()["error"]["field"] == field, (change, response.text)
        assert response.json()["error"]["message"].startswith(f"{field}: "), response.text
    assert server.client.get("/admin/schedules").json() == []


def test_missing_fields_and_bad_names_are_refused(server: Server) -> None:
    response = server.client.put("/admin/schedules/s1", json={"job": {"type": "quick"}})
    assert (response.status_code, response.json()["error"]["field"]) == (400, "cron")
    response = server.client.put("/admin/schedules/s1", json={"cron": "@daily"})
    assert (response.status_code, response.json()["error"]["field"]) == (400, "job")
    response = server.client.put("/admin/schedules/-bad", json=WEEKLY)
    assert (response.status_code, response.json()["error"]["field"]) == (400, "name")
    response = server.client.put("/admin/schedules/" + "x" * 101, json=WEEKLY)
    assert (response.status_code, response.json()["error"]["field"]) == (400, "name")
    response = server.client.put("/admin/schedules/a%00b", json=WEEKLY)
    assert (response.status_code, response.json()["error"]["field"]) == (400, "name")
    deep = b'{"cron": "@daily", "job": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    response = server.client.put(
        "/admin/schedules/s1", content=deep, headers={"content-type": "application/json"}
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, "invalid_json")
    response = server.client.get("/admin/schedules", params={"limit": 0})
    assert (response.status_code, response.json()["error"]["field"]) == (400, "limit")
    assert server.client.get("/admin/schedules").json() == []


def test_roles_admin_changes_viewer_reads() -> None:
    assert role_of(routes.put_schedule) is Role.ADMIN
    assert role_of(routes.delete_schedule) is Role.ADMIN
    assert role_of(routes.get_schedule) is Role.VIEWER
    assert role_of(routes.list_schedules) is Role.VIEWER


def test_a_due_tick_starts_its_job_and_a_held_key_is_a_recorded_skip(
    make_server: Any, sqlite_url: str
) -> None:
    server = make_server(**FAST_TICKS)
    job = {"type": "sleepy", "steps": 1, "stepMs": 60_000, "key": "k1"}
    server.client.put("/admin/schedules/held", json={**WEEKLY, "job": job})
    tick = _tick_now(sqlite_url, "held")
    (first,) = _recent(server, "held", 1)
    assert first["tickAt"] == iso(from_ms(tick))
    job_id = first["jobId"]
    server.wait_status(job_id, "running")
    # The next tick comes while that job still holds its key: skipped, not piled up.
    _tick_now(sqlite_url, "held", tick + 1)
    skip, started = _recent(server, "held", 2)
    assert "jobId" not in skip
    assert job_id in skip["skipped"]
    assert "k1" in skip["skipped"]
    assert started["jobId"] == job_id
    assert started["jobStatus"] == "running"
    assert [j["id"] for j in server.client.get("/admin/jobs").json()] == [job_id]
    # The schedule moved on to its next real tick, a Monday.
    after = server.client.get("/admin/schedules/held").json()
    assert after["nextFireAt"].endswith("T06:00:00.000Z")
    server.client.post(f"/admin/jobs/{job_id}/cancel")


def test_a_job_a_tick_starts_streams_like_a_started_one(make_server: Any, sqlite_url: str) -> None:
    server = make_server(**FAST_TICKS)
    server.client.put("/admin/schedules/q", json=WEEKLY)
    seen: list[str] = []
    with server.client.stream("GET", "/admin/jobs/events?type=quick") as response:
        lines = response.iter_lines()
        _tick_now(sqlite_url, "q")
        for line in lines:
            if line.startswith("event: "):
                seen.append(line[7:])
                if line == "event: finished":
                    break
    assert seen[0] == "created"
    assert seen[-1] == "finished"


def test_a_refused_job_at_its_tick_is_a_recorded_skip(make_server: Any, sqlite_url: str) -> None:
    server = make_server(**FAST_TICKS)
    server.client.put("/admin/groups/g1", json=group_body(inactive=1))
    server.client.put("/admin/schedules/sweep", json={**WEEKLY, "job": removal("g1", dryRun=True)})
    assert server.client.delete("/admin/groups/g1").status_code in (200, 204)
    _tick_now(sqlite_url, "sweep")
    (skip,) = _recent(server, "sweep", 1)
    assert "unknown group 'g1'" in skip["skipped"]
    assert server.client.get("/admin/jobs").json() == []


def test_missed_ticks_catch_up_once_or_not_at_all(make_server: Any, sqlite_url: str) -> None:
    first = make_server()
    hourly = {**WEEKLY, "cron": "0 * * * *"}
    first.client.put("/admin/schedules/one", json=hourly)
    first.client.put("/admin/schedules/none", json={**hourly, "catchUp": "none"})
    first.stop()
    # Every instance was down for the last three hours of ticks.
    three_hours_ago = now_ms() - 3 * 3600 * 1000
    _tick_now(sqlite_url, "one", three_hours_ago)
    _tick_now(sqlite_url, "none", three_hours_ago)
    second = make_server(**FAST_TICKS)
    (caught_up,) = _recent(second, "one", 1)
    second.wait_status(caught_up["jobId"], "completed")
    (missed,) = _recent(second, "none", 1)
    assert missed["skipped"].startswith("missed")
    # Both moved on to the next hour, not through the missed ones.
    for name in ("one", "none"):
        view = second.client.get(f"/admin/schedules/{name}").json()
        assert view["nextFireAt"].endswith(":00:00.000Z")
        assert len(view["recent"]) == 1
    assert len(second.client.get("/admin/jobs").json()) == 1


def test_the_schedules_commands(server: Server, tmp_path: Path) -> None:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"type": "quick", "value": 2}))
    put = jobsup(
        server, "schedules", "put", "nightly", "--cron", "30 2 * * *",
        "--timezone", "America/New_York", "--job", f"@{job}", "--json",
    )  # fmt: skip
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["job"] == {"type": "quick", "value": 2}
    shown = jobsup(server, "schedules", "show", "nightly")
    assert shown.returncode == 0, shown.stderr
    assert "30 2 * * * in America/New_York" in shown.stdout
    listed = jobsup(server, "schedules", "list")
    assert listed.stdout.startswith("nightly  30 2 * * *  America/New_York  quick  next ")
    refused = jobsup(
        server, "schedules", "put", "bad", "--cron", "30 2 * *", "--job", '{"type": "quick"}'
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("jobsup: cron: ")
    assert jobsup(server, "schedules", "delete", "nightly").returncode == 0
    gone = jobsup(server, "schedules", "show", "nightly")
    assert gone.returncode == 2
    assert "no schedule 'nightly'" in gone.stderr
    assert jobsup(None, "schedules", "list").returncode == 4  # no server there
