"""Per-job limits (memory, CPU, timeout, open files) and containment of a job's descendants.

Real children through a real server: the kernel's rlimits, the front's
timeout and the subreaper's sweep are what is tested.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import msgspec
import pytest

from supervisor import timing
from supervisor.errors import Invalid
from supervisor.state import Escalation, JobStatus, classify_exit
from tests.conftest import Server, wait_until
from tests.helpers import alive, rows
from tests.test_schedules import _recent, _tick_now
from workers import protocol, registry
from workers.limits import Limits, descendants, sweep

FINAL = ("completed", "failed", "cancelled")


def _gone(pid: int) -> bool:
    return not alive(pid)


def test_a_job_past_its_memory_limit_fails_with_memory_limit(server: Server) -> None:
    job_id = server.start_job({"type": "hog", "memoryMib": 400, "limits": {"memoryMiB": 128}})
    job = server.wait_status(job_id, *FINAL)
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "memory_limit"
    assert job["error"]["message"] == "used more than 128 MiB of memory"
    assert 0 < job["result"]["heldMiB"] < 128  # its partial result is kept
    assert job["limits"] == {"timeoutS": 600, "memoryMiB": 128}  # the type's timeout too


def test_a_job_past_its_cpu_limit_fails_with_cpu_limit(server: Server) -> None:
    job_id = server.start_job({"type": "hog", "spin": True, "limits": {"cpuS": 1}})
    job = server.wait_status(job_id, *FINAL, timeout=120)  # 1 s of CPU at nice 10, shared
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "cpu_limit"
    assert job["error"]["message"] == "used more than 1 s of CPU"
    assert job["result"] == {"started": True}


def test_a_job_past_its_timeout_fails_with_its_partial_result(server: Server) -> None:
    job_id = server.start_job({"type": "hog", "sleepS": 600, "limits": {"timeoutS": 0.5}})
    job = server.wait_status(job_id, *FINAL)
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "timeout"
    assert job["error"]["message"] == "ran longer than its 0.5 s timeout"
    assert job["result"] == {"started": True}
    assert job["cancel"] is None  # nobody cancelled it


@pytest.mark.parametrize("mode", ["cooperative", "freeze"])
def test_a_timeout_counts_running_time_not_paused_time(server: Server, mode: str) -> None:
    timeout_s = 2
    job_id = server.start_job({"type": "ticker", "limits": {"timeoutS": timeout_s}})
    server.wait_status(job_id, "running")
    answer = server.client.post(f"/admin/jobs/{job_id}/pause", json={"mode": mode})
    assert answer.status_code in (200, 202), answer.text  # paused, or still pausing
    ticks = server.wait_status(job_id, "paused")["progress"]["processed"]
    held_until = time.monotonic() + timeout_s + 1
    # Paused past its whole timeout (or out of paused earlier: the assertion says so).
    wait_until(
        lambda: server.status(job_id)["status"] != "paused" or time.monotonic() > held_until,
        timeout=timeout_s + 10,
    )
    assert server.status(job_id)["status"] == "paused"
    assert server.client.post(f"/admin/jobs/{job_id}/resume").status_code == 200
    job = server.wait_status(job_id, *FINAL, timeout=30)
    assert (job["status"], job["error"]["reason"]) == ("failed", "timeout")  # it still binds
    assert job["progress"]["processed"] > ticks  # after running on from where it held


def test_a_stubborn_job_past_its_timeout_is_killed_and_still_reads_timeout(server: Server) -> None:
    body = {"type": "stubborn", "ignoreTerm": True, "limits": {"timeoutS": 0.2}}
    job = server.wait_status(server.start_job(body), *FINAL)
    assert (job["status"], job["error"]["reason"]) == ("failed", "timeout")
    assert job["result"] == {"started": True}


def test_too_few_open_files_is_an_ordinary_failure(server: Server) -> None:
    job_id = server.start_job({"type": "escape", "limits": {"openFiles": 3}})
    job = server.wait_status(job_id, *FINAL)
    assert job["status"] == "failed"
    assert job["error"]["reason"] == "exception"
    assert "Too many open files" in job["error"]["message"]
    # A job that spent every descriptor still has its escaped grandchild swept.
    job_id = server.start_job({"type": "escape", "then": "exhaust", "limits": {"openFiles": 32}})
    job = server.wait_status(job_id, *FINAL)
    assert (job["status"], job["error"]["type"]) == ("failed", "OSError")
    wait_until(lambda: _gone(job["result"]["grandchildPid"]))
    assert job["leftoversKilled"] == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("timeoutS", 61), ("cpuS", 11), ("memoryMiB", 1025), ("openFiles", 65)],
)
def test_a_limit_above_its_cap_is_refused_naming_the_field(
    make_server: Any, field: str, value: float
) -> None:
    server = make_server(
        JOBSUP_MAX_TIMEOUT_S="60",
        JOBSUP_MAX_CPU_S="10",
        JOBSUP_MAX_MEMORY_MIB="1024",
        JOBSUP_MAX_OPEN_FILES="64",
    )
    answer = server.client.post(
        "/admin/jobs/start", json={"type": "quick", "limits": {field: value}}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["field"] == f"limits.{field}"
    # At the cap is fine, and the type's default (600 s) is lowered to the cap.
    job_id = server.start_job({"type": "hog", "limits": {field: value - 1}})
    job = server.wait_status(job_id, *FINAL)
    assert job["status"] == "completed"
    assert job["limits"][field] == value - 1
    assert job["limits"]["timeoutS"] == (value - 1 if field == "timeoutS" else 60)


def test_bad_limits_are_refused_naming_the_field(server: Server) -> None:
    types = {t["name"]: t for t in server.client.get("/admin/job-types").json()}
    assert types["hog"]["limits"] == {"timeoutS": 600}  # a type's defaults are shown
    assert types["removal_workflow"]["limits"] is None
    for limits in ({"memoryMiB": 0}, {"timeoutS": -1}, {"nope": 1}, {"openFiles": "many"}):
        answer = server.client.post("/admin/jobs/start", json={"type": "quick", "limits": limits})
        assert answer.status_code == 400, limits
        assert answer.json()["error"]["field"].startswith("limits"), limits


def test_jobs_without_limits_show_none_and_limits_survive_a_rerun(server: Server) -> None:
    plain = server.wait_status(server.start_job({"type": "quick"}), "completed")
    assert plain["limits"] is None
    assert "leftoversKilled" not in plain or plain["leftoversKilled"] is None
    first = server.start_job({"type": "quick", "limits": {"memoryMiB": 512, "cpuS": 5}})
    server.wait_status(first, "completed")
    again = server.client.post(f"/admin/jobs/{first}/rerun")
    assert again.status_code == 202, again.text
    rerun = server.wait_status(again.json()["jobId"], "completed")
    assert rerun["limits"] == {"cpuS": 5, "memoryMiB": 512}


@pytest.mark.parametrize(
    ("then", "cancel", "status"),
    [
        ("complete", False, "completed"),
        ("fail", False, "failed"),
        ("wait", True, "cancelled"),  # cooperative: the child sweeps at its end
        ("stubborn", True, "cancelled"),  # SIGKILLed: the front sweeps before the kill
        ("crash", False, "failed"),  # died on its own: the front finds its orphans
    ],
)
def test_a_setsid_grandchild_does_not_outlive_its_job(
    server: Server, then: str, cancel: bool, status: str
) -> None:
    job_id = server.start_job({"type": "escape", "then": then})
    grandchild = wait_until(lambda: (server.status(job_id)["result"] or {}).get("grandchildPid"))
    if cancel:
        assert server.client.post(f"/admin/jobs/{job_id}/cancel").status_code in (200, 202)
    job = server.wait_status(job_id, *FINAL)
    assert job["status"] == status
    wait_until(lambda: _gone(grandchild))
    assert job["leftoversKilled"] >= 1


def test_a_schedule_s_job_is_checked_and_started_with_its_limits(
    make_server: Any, sqlite_url: str
) -> None:
    server = make_server(JOBSUP_POLL_S="0.2", JOBSUP_MAX_MEMORY_MIB="1024")
    weekly = {"cron": "0 3 * * 1", "timezone": "UTC"}
    too_much = {**weekly, "job": {"type": "quick", "limits": {"memoryMiB": 2048}}}
    refused = server.client.put("/admin/schedules/big", json=too_much)
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "job.limits.memoryMiB"
    fine = {**weekly, "job": {"type": "quick", "limits": {"memoryMiB": 256}}}
    assert server.client.put("/admin/schedules/fine", json=fine).status_code in (200, 201)
    _tick_now(sqlite_url, "fine")
    (tick,) = _recent(server, "fine", 1)
    job = server.wait_status(tick["jobId"], *FINAL)
    assert (job["status"], job["limits"]) == ("completed", {"memoryMiB": 256})


@pytest.mark.postgres
def test_limits_and_leftovers_are_stored_on_postgresql(pg_url: str, make_server: Any) -> None:
    server = make_server(DATABASE_URL=pg_url)
    body = {"type": "escape", "limits": {"timeoutS": 30, "memoryMiB": 256}}
    job = server.wait_status(server.start_job(body), *FINAL)
    assert job["status"] == "completed"
    wait_until(lambda: _gone(job["result"]["grandchildPid"]))
    (row,) = rows(pg_url, "SELECT limits, leftovers_killed FROM jobs WHERE id = ?", job["id"])
    assert msgspec.json.decode(row["limits"]) == {"timeoutS": 30, "memoryMiB": 256}
    assert row["leftovers_killed"] == 1


# -- the rules as plain functions ------------------------------------------------


def test_a_start_s_limits_go_over_its_type_s_and_are_capped() -> None:
    registry.load(("tests.jobs",))
    job_type = registry.get("hog")  # declares timeoutS 600
    caps = Limits(timeout_s=60, cpu_s=10, memory_mib=1024, open_files=64)
    options = msgspec.json.decode(b'{"limits": {"cpuS": 2}}', type=timing.StartOptions)
    assert timing.limits(job_type, options, caps) == Limits(timeout_s=60, cpu_s=2)
    assert timing.limits(registry.get("quick"), timing.StartOptions(), caps) is None
    too_much = msgspec.json.decode(b'{"limits": {"memoryMiB": 2048}}', type=timing.StartOptions)
    with pytest.raises(Invalid) as caught:
        timing.limits(job_type, too_much, caps)
    assert caught.value.field == "limits.memoryMiB"


def test_classify_exit_reads_limits() -> None:
    limits = Limits(timeout_s=30, cpu_s=10, memory_mib=256)
    timed_out = classify_exit(
        None, protocol.Cancelled({"n": 1}), Escalation.ASK, limits=limits, timed_out=True
    )
    assert timed_out.status is JobStatus.FAILED
    assert timed_out.result == {"n": 1}
    assert timed_out.error is not None
    assert timed_out.error["message"] == "ran longer than its 30 s timeout"
    killed = classify_exit(-9, None, Escalation.KILL, {"p": 1}, limits=limits, timed_out=True)
    assert (killed.status, killed.error and killed.error["reason"]) == (JobStatus.FAILED, "timeout")
    memory = classify_exit(protocol.EXIT_MEMORY, None, None, limits=limits)
    assert memory.error == {
        "reason": "memory_limit",
        "type": "MemoryLimit",
        "message": "used more than 256 MiB of memory",
    }
    cpu = classify_exit(-24, None, None, limits=limits)  # SIGXCPU
    assert cpu.error is not None
    assert cpu.error["message"] == "used more than 10 s of CPU"
    failed = protocol.Failed("MemoryLimit", "used more than 256 MiB of memory", "", "memory_limit")
    reported = classify_exit(protocol.EXIT_MEMORY, failed, None, limits=limits)
    assert reported.error is not None
    assert reported.error["reason"] == "memory_limit"
    done = classify_exit(0, protocol.Done(1), Escalation.ASK, limits=limits, timed_out=True)
    assert done.status is JobStatus.COMPLETED  # it finished as its timeout came


# A subreaper whose child forks a grandchild that calls setsid, ignores
# SIGTERM and outlives its parent: the orphan comes to the subreaper.
_TREE = """
import os, signal, sys, time
from workers.limits import make_subreaper
assert make_subreaper()
if os.fork() == 0:
    if os.fork() == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(os.getpid(), flush=True)
        time.sleep(600)
    os._exit(0)
sys.stdin.read()
"""


def test_the_sweep_finds_an_orphan_that_left_the_group_and_kills_it() -> None:
    command = [sys.executable, "-c", _TREE]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as root:
        try:
            assert root.stdout is not None
            grandchild = int(root.stdout.readline())
            # Its parent is gone: it is the subreaper's now, in a session of its own.
            wait_until(lambda: descendants(root.pid) == [grandchild])
            assert sweep(root.pid) == 1
            wait_until(lambda: _gone(grandchild))
            assert sweep(root.pid) == 0
        finally:
            root.kill()
