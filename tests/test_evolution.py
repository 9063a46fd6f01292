"""Removal jobs against an Evolution API: a real server, real children, a fake Evolution.

The fake (``tests.fake_evolution``) is a real HTTP server on a local port
speaking Evolution API v2's shapes. The group is LID-addressed: most
participants are listed by LID with their phone id beside them, one the
other way round, while our directory knows everyone by phone id (as an
import from an exported chat would). The jobs go through the real client
code in the server's children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import FAST, ROOT, Server, free_port, wait_until
from tests.fake_evolution import INSTANCE, KEY, FakeEvolution, Fault, running
from tests.helpers import iso_days_ago, removal

GROUP = "120363000000000099@g.us"


def pn(n: int) -> str:
    return f"55119{n:08d}@s.whatsapp.net"


def lid(n: int) -> str:
    return f"{n:015d}@lid"


# Listed by LID, phone id beside: the two admins, four idle members, a talker, a friend.
BY_LID = {"admin1": 1, "admin2": 2, "idle1": 11, "idle2": 12, "idle3": 13, "idle4": 14}
BY_LID |= {"talker": 21, "friend": 22}
IDLE = ["idle1", "idle2", "idle3", "idle4", "idle5"]  # idle5 is listed by phone id


def participants() -> list[dict[str, Any]]:
    listed = [
        {"id": lid(n), "phoneNumber": pn(n), "admin": None, "name": None}
        for name, n in BY_LID.items()
    ]
    listed[0]["admin"] = "superadmin"
    listed[1]["admin"] = "admin"
    listed.append({"id": pn(15), "lid": lid(15), "admin": None, "imgUrl": None})
    return listed


def key_of(name: str) -> str:
    """The directory's key for a member: its phone id."""
    return pn(15 if name == "idle5" else BY_LID[name])


def sent_id(name: str) -> str:
    """The id the participants list gave the member (what a removal must send)."""
    return pn(15) if name == "idle5" else lid(BY_LID[name])


def directory_body() -> dict[str, Any]:
    """Our directory's view: everyone by phone id, with the activity we know."""
    members = [
        {
            "whatsappId": key_of(name),
            "joinedAt": iso_days_ago(300),
            "lastActiveAt": iso_days_ago(90),
        }
        for name in [*IDLE, "friend", "admin1", "admin2"]
    ]
    members.append(
        {
            "whatsappId": key_of("talker"),
            "joinedAt": iso_days_ago(300),
            "lastActiveAt": iso_days_ago(1),
        }
    )
    return {"name": "Garden", "members": members}


@pytest.fixture
def fake() -> FakeEvolution:
    fake = FakeEvolution()
    fake.add_group(GROUP, participants())
    return fake


@pytest.fixture
def evolution_url(fake: FakeEvolution) -> Iterator[str]:
    with running(fake) as url:
        yield url


def evolution_env(url: str, **more: str) -> dict[str, str]:
    return {
        "JOBSUP_GATEWAY": "evolution",
        "EVOLUTION_API_URL": url,
        "EVOLUTION_API_KEY": KEY,
        "EVOLUTION_INSTANCE": INSTANCE,
        "EVOLUTION_TIMEOUT_S": "5",
        "JOBSUP_GATEWAY_BACKOFF_MS": "20",
        **more,
    }


@pytest.fixture
def server(make_server: Callable[..., Server], evolution_url: str) -> Server:
    return prepared(make_server(**evolution_env(evolution_url)))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_db_server(
    request: pytest.FixtureRequest, make_server: Callable[..., Server], evolution_url: str
) -> Server:
    """The server on SQLite, then on PostgreSQL: where the database's part matters."""
    env = evolution_env(evolution_url)
    if request.param == "postgresql":
        env["DATABASE_URL"] = str(request.getfixturevalue("pg_url"))
    return prepared(make_server(**env))


def prepared(server: Server) -> Server:
    """The group in our directory, by phone ids; the friend whitelisted by its LID."""
    response = server.client.put(f"/admin/groups/{GROUP}", json=directory_body())
    assert response.status_code == 200, response.text
    response = server.client.put(
        f"/admin/groups/{GROUP}/whitelist", json={"whatsappIds": [lid(BY_LID["friend"])]}
    )
    assert response.status_code == 200, response.text
    return server


def history(server: Server) -> list[dict[str, Any]]:
    response = server.client.get(f"/admin/groups/{GROUP}/removals", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return list(response.json())


def members(server: Server) -> dict[str, dict[str, Any]]:
    response = server.client.get(f"/admin/groups/{GROUP}/members")
    assert response.status_code == 200, response.text
    return {m["whatsappId"]: m for m in response.json()}


def sent(fake: FakeEvolution) -> list[str]:
    return [p for call in fake.calls_to("update") for p in call.body["participants"]]


def run(server: Server, **overrides: Any) -> dict[str, Any]:
    job_id = server.start_job(removal(GROUP, **overrides))
    return server.wait_status(job_id, "completed", "failed", "cancelled", timeout=60)


def assert_key_never_shown(server: Server) -> None:
    assert KEY not in server.log()


def test_a_workflow_removes_the_inactive_by_the_ids_evolution_listed(
    any_db_server: Server, fake: FakeEvolution
) -> None:
    server = any_db_server
    fake.codes[sent_id("idle3")] = "404"  # WhatsApp: not in the group
    fake.codes[sent_id("idle4")] = "403"  # WhatsApp refuses this one
    job = run(server)
    assert job["status"] == "completed", job
    result = job["result"]
    removed = [key_of(n) for n in ("idle1", "idle2", "idle3", "idle5")]
    assert sorted(result["removedWhatsappIds"]) == sorted(removed)
    [failure] = result["failed"]
    assert failure["whatsappId"] == key_of("idle4")
    assert "403" in failure["reason"]
    # Each idle member sent once, by the id the participants list gave it; nobody else.
    assert sorted(sent(fake)) == sorted(sent_id(n) for n in IDLE)
    assert fake.removed == [sent_id(n) for n in ("idle1", "idle2", "idle5")]
    rows = {r["whatsappId"]: r for r in history(server)}
    assert len(rows) == 5
    assert {w: rows[w]["outcome"] for w in rows} == {
        **{key_of(n): "SUCCESS" for n in ("idle1", "idle2", "idle3", "idle5")},
        key_of("idle4"): "FAILURE",
    }
    assert rows[key_of("idle1")]["altId"] == lid(BY_LID["idle1"])
    assert rows[key_of("idle3")]["reason"] == "already gone: not in the group"
    assert {r["jobId"] for r in rows.values()} == {job["id"]}
    now = members(server)
    assert now[key_of("admin1")]["isAdmin"]
    assert now[key_of("admin2")]["isAdmin"]
    assert now[key_of("friend")]["whitelisted"]
    assert key_of("idle1") not in now
    assert_key_never_shown(server)


def test_a_dry_run_calls_nothing_that_changes_the_group(
    server: Server, fake: FakeEvolution
) -> None:
    job = run(server, dryRun=True)
    assert job["status"] == "completed", job
    assert sorted(job["result"]["wouldRemoveWhatsappIds"]) == sorted(key_of(n) for n in IDLE)
    assert fake.calls_to("update") == []
    assert {c.method for c in fake.calls} == {"GET"}
    assert len(fake.members(GROUP)) == len(participants())
    assert history(server) == []


def test_a_run_goes_through_429s_500s_and_rate_overlimit(
    server: Server, fake: FakeEvolution
) -> None:
    # The start's check looks once; the job's sync then meets a 429.
    fake.fail_next("participants", Fault(0), Fault(429, ["too many"], retry_after=0))
    fake.fail_next(
        "update",
        Fault(429, ["too many"]),
        Fault(500, "Internal error"),
        Fault(400, ["Error updating participants", "Error: rate-overlimit"]),
        Fault(0, delay_s=0.2),  # slow, then answered
    )
    job = run(server)
    assert job["status"] == "completed", job
    assert sorted(job["result"]["removedWhatsappIds"]) == sorted(key_of(n) for n in IDLE)
    assert sorted(fake.removed) == sorted(sent_id(n) for n in IDLE)  # each once
    assert len(fake.calls_to("update")) == 3 + 3  # three batches, three retries
    assert [r["outcome"] for r in history(server)] == ["SUCCESS"] * 5


def test_cancel_stops_a_backoff_wait_at_once(server: Server, fake: FakeEvolution) -> None:
    fake.fail_next("update", Fault(429, ["slow down"], retry_after=90))
    job_id = server.start_job(removal(GROUP))
    wait_until(lambda: fake.calls_to("update"), timeout=30)
    response = server.client.post(f"/admin/jobs/{job_id}/cancel")
    assert response.status_code in (200, 202), response.text
    job = server.wait_status(job_id, "cancelled", "failed", "completed", timeout=20)
    assert job["status"] == "cancelled", job  # long before the 90 s wait was over
    assert fake.removed == []
    assert history(server) == []
    # The next run finds the intents the cancelled one left, and finishes the work.
    again = run(server)
    assert again["status"] == "completed", again
    assert sorted(fake.removed) == sorted(sent_id(n) for n in IDLE)
    assert sorted(r["whatsappId"] for r in history(server)) == sorted(key_of(n) for n in IDLE)


@pytest.mark.parametrize("how", ["sigkill", "cancel"])
def test_a_child_killed_mid_batch_loses_nothing_and_removes_no_one_twice(
    any_db_server: Server, fake: FakeEvolution, how: str
) -> None:
    """SIGKILL from outside, or a cancel whose SIGTERM waits for the batch, then SIGKILL."""
    server = any_db_server
    fake.hold_removals = True  # the first batch takes effect, then its answer waits
    job_id = server.start_job(removal(GROUP))
    assert fake.holding.wait(30)
    if how == "sigkill":
        os.kill(server.status(job_id)["pid"], signal.SIGKILL)
    else:
        response = server.client.post(f"/admin/jobs/{job_id}/cancel")
        assert response.status_code in (200, 202), response.text
    first = server.wait_status(job_id, "failed", "completed", "cancelled", timeout=30)
    assert first["status"] == ("failed" if how == "sigkill" else "cancelled"), first
    fake.hold_removals = False
    fake.release.set()
    done_first = list(fake.removed)
    assert len(done_first) == 2  # the first batch, which nobody recorded yet
    assert history(server) == []
    again = run(server)
    assert again["status"] == "completed", again
    rows = history(server)
    assert sorted(fake.removed) == sorted(sent_id(n) for n in IDLE)  # each once
    assert sorted(r["whatsappId"] for r in rows) == sorted(key_of(n) for n in IDLE)
    assert {r["outcome"] for r in rows} == {"SUCCESS"}
    by_job = {r["whatsappId"]: r["jobId"] for r in rows}
    first_batch = [key_of(n) for n in IDLE if sent_id(n) in done_first]
    assert {by_job[w] for w in first_batch} == {job_id}  # settled as the killed job's


def test_a_refused_batch_fails_the_job_and_its_members_stay_queued(
    server: Server, fake: FakeEvolution
) -> None:
    fake.fail_next("update", Fault(400, ["Error updating participants", "Error: not-authorized"]))
    job = run(server)
    assert job["status"] == "failed", job
    assert "not an admin" in job["error"]["message"]
    rows = history(server)
    assert sorted(r["outcome"] for r in rows) == ["FAILURE", "FAILURE"]
    now = members(server)
    assert all(now[r["whatsappId"]]["queued"] for r in rows)
    assert fake.removed == []
    # A removal of the queue alone (no sync) learns the ids from the participants list.
    body = removal(GROUP, type="removal_queue")
    del body["inactivityWindowMs"]
    again = server.wait_status(server.start_job(body), "completed", "failed", timeout=60)
    assert again["status"] == "completed", again
    assert sorted(fake.removed) == sorted(sent_id(n) for n in IDLE)
    outcomes = sorted((r["outcome"], r["jobId"] == again["id"]) for r in history(server))
    assert outcomes == [("FAILURE", False)] * 2 + [("SUCCESS", True)] * 5


def test_a_participants_list_without_admin_flags_removes_nobody(
    server: Server, fake: FakeEvolution
) -> None:
    fake.add_group(GROUP, [{**p, "admin": None} for p in participants()])
    job = run(server)
    assert job["status"] == "failed", job
    assert "show no admin" in job["error"]["message"]
    assert fake.calls_to("update") == []
    assert history(server) == []


def start_refused(server: Server) -> dict[str, Any]:
    response = server.client.post("/admin/jobs/start", json=removal(GROUP))
    assert response.status_code >= 400, response.text
    return {"status": response.status_code, **response.json()["error"]}


def test_start_refuses_an_unknown_group_and_a_disconnected_instance(
    server: Server, fake: FakeEvolution
) -> None:
    response = server.client.post("/admin/jobs/start", json=removal("120363000000000404@g.us"))
    assert response.status_code == 404, response.text
    assert response.json()["error"]["field"] == "groupWaId"
    fake.state = "close"
    refused = start_refused(server)
    assert (refused["status"], refused["code"]) == (503, "unavailable")
    assert "not connected (state: close)" in refused["message"]
    gateway = server.client.get("/admin/gateway").json()
    assert gateway["gateway"] == "evolution"
    assert gateway["connectionState"] == "close"
    assert "not connected" in gateway["lastError"]["message"]
    fake.state = "open"
    assert server.client.get("/admin/gateway").json()["connectionState"] == "open"


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("EVOLUTION_API_KEY", "wrong-key-0000", "EVOLUTION_API_KEY"),
        ("EVOLUTION_INSTANCE", "nobody", "no instance 'nobody'"),
    ],
)
def test_start_refuses_a_rejected_key_or_an_unknown_instance(
    make_server: Callable[..., Server], evolution_url: str, setting: str, value: str, says: str
) -> None:
    server = make_server(**evolution_env(evolution_url, **{setting: value}))
    server.client.put(f"/admin/groups/{GROUP}", json=directory_body())
    refused = start_refused(server)
    assert refused["status"] == 503
    assert says in refused["message"]
    assert value not in refused["message"] or setting != "EVOLUTION_API_KEY"
    assert server.client.get("/admin/gateway").json()["lastError"]["message"] == refused["message"]
    assert "wrong-key-0000" not in server.log()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"EVOLUTION_API_URL": ""}, "EVOLUTION_API_URL"),
        ({"EVOLUTION_API_URL": "evolution.example.com"}, "EVOLUTION_API_URL"),
        ({"EVOLUTION_INSTANCE": ""}, "EVOLUTION_INSTANCE"),
        ({"EVOLUTION_API_KEY": ""}, "EVOLUTION_API_KEY"),
        ({"EVOLUTION_API_KEY": KEY + " \n"}, "EVOLUTION_API_KEY"),
        ({"EVOLUTION_TIMEOUT_S": "0"}, "EVOLUTION_TIMEOUT_S"),
        ({"JOBSUP_GATEWAY": "whatsapp"}, "JOBSUP_GATEWAY"),
    ],
)
def test_bad_gateway_settings_stop_the_server_naming_them(
    env: dict[str, str], named: str, sqlite_url: str
) -> None:
    settings = {**evolution_env("http://127.0.0.1:9"), **env}
    completed = subprocess.run(
        [sys.executable, "-m", "supervisor", "serve", "--port", str(free_port())],
        env={**os.environ, **FAST, "DATABASE_URL": sqlite_url, **settings},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2, completed.stderr
    assert named in completed.stderr
    assert KEY not in completed.stderr + completed.stdout


def test_the_local_gateway_reports_itself(make_server: Callable[..., Server]) -> None:
    answer = make_server().client.get("/admin/gateway")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"gateway": "local", "connectionState": None, "lastError": None}
