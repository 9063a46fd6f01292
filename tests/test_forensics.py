"""How each job ended and what it used (``resources``), with real children."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from supervisor.forensics import Ending, ending, exit_status, tail
from supervisor.state import Escalation
from tests.conftest import Server, wait_until
from workers import protocol

ALLOC_MIB = 48


def _resources(server: Server, job_id: str) -> dict[str, Any]:
    """The job's resources, once its child is gone (a moment after its final state)."""

    def recorded() -> dict[str, Any] | None:
        return server.status(job_id).get("resources")  # type: ignore[no-any-return]

    return dict(wait_until(recorded, timeout=30))


def _finish(server: Server, how: str, status: str, cancel: bool = False) -> dict[str, Any]:
    job_id = server.start_job({"type": "end", "how": how, "allocMib": ALLOC_MIB})
    if cancel:
        wait_until(lambda: (server.status(job_id).get("result") or {}).get("pid"))
        assert server.client.post(f"/admin/jobs/{job_id}/cancel").status_code in (200, 202)
    server.wait_status(job_id, status)
    return _resources(server, job_id)


def _used(resources: dict[str, Any]) -> None:
    """CPU, memory and wall time are known, whatever the ending."""
    assert resources["peakRssKiB"] >= ALLOC_MIB * 1024
    assert resources["userCpuS"] >= 0
    assert resources["systemCpuS"] >= 0
    assert resources["userCpuS"] + resources["systemCpuS"] > 0
    assert resources["wallS"] >= 0


@pytest.fixture
def fast(make_server: Callable[..., Server]) -> Server:
    return make_server(JOBSUP_CANCEL_GRACE_S="0.3", JOBSUP_KILL_AFTER_S="0.3")


def test_a_completed_job_exited_0_with_its_usage_and_stderr_tail(fast: Server) -> None:
    resources = _finish(fast, "return", "completed")
    assert resources["ended"] == "exited"
    assert resources["exitCode"] == 0
    assert resources["signal"] is None
    assert resources["stderrTail"] == "a line on stderr"
    assert resources["limit"] is None
    _used(resources)


def test_a_failed_job_exited_1(fast: Server) -> None:
    resources = _finish(fast, "raise", "failed")
    assert (resources["ended"], resources["exitCode"]) == ("exited", 1)
    assert "a line on stderr" in resources["stderrTail"]
    _used(resources)


def test_a_job_cancelled_at_a_cancel_point_is_cooperative(fast: Server) -> None:
    resources = _finish(fast, "wait", "cancelled", cancel=True)
    assert (resources["ended"], resources["exitCode"]) == ("cooperative", protocol.EXIT_CANCELLED)
    _used(resources)


def test_a_job_stopped_by_sigterm_is_terminated(fast: Server) -> None:
    resources = _finish(fast, "stubborn", "cancelled", cancel=True)
    assert (resources["ended"], resources["exitCode"]) == ("terminated", protocol.EXIT_CANCELLED)
    _used(resources)


def test_a_job_that_ignores_sigterm_is_killed(fast: Server) -> None:
    resources = _finish(fast, "ignore_term", "cancelled", cancel=True)
    assert resources["ended"] == "killed"
    assert (resources["exitCode"], resources["signal"]) == (None, "SIGKILL")
    assert resources["stderrTail"] == "a line on stderr"
    _used(resources)  # the forkserver's wait4: a killed child reports nothing itself


@pytest.mark.parametrize(
    ("how", "code", "signal_name"),
    [("exit", 7, None), ("segfault", None, "SIGSEGV"), ("sigkill", None, "SIGKILL")],
)
def test_a_crash_is_told_by_its_exit_status(
    fast: Server, how: str, code: int | None, signal_name: str | None
) -> None:
    resources = _finish(fast, how, "failed")
    assert resources["ended"] == "crash"
    assert (resources["exitCode"], resources["signal"]) == (code, signal_name)
    assert resources["stderrTail"].startswith("a line on stderr")
    if how == "segfault":  # faulthandler says where it died, on the stderr kept
        assert "Segmentation fault" in resources["stderrTail"]
    _used(resources)


def test_a_job_killed_from_outside_is_a_crash(fast: Server) -> None:
    job_id = fast.start_job({"type": "end", "how": "wait"})
    pid = wait_until(lambda: (fast.status(job_id).get("result") or {}).get("pid"))
    os.kill(pid, signal.SIGKILL)
    fast.wait_status(job_id, "failed")
    resources = _resources(fast, job_id)
    assert (resources["ended"], resources["signal"]) == ("crash", "SIGKILL")


def test_the_stderr_tail_keeps_the_last_lines_within_its_bound(fast: Server) -> None:
    long = "e" * 3000
    job_id = fast.start_job({"type": "end", "stderr": f"first\n{long}\n{long}\n{long}\nlast"})
    fast.wait_status(job_id, "completed")
    kept = _resources(fast, job_id)["stderrTail"]
    assert kept.endswith(f"{long}\nlast")
    assert "first" not in kept
    assert len(kept.encode()) <= 8 * 1024


# -- the pure parts -----------------------------------------------------------------


def test_the_ending_follows_the_final_message_escalation_and_limit() -> None:
    kill, term = -signal.SIGKILL, -signal.SIGTERM
    assert ending(None, protocol.Done(1), None) is Ending.EXITED
    assert ending(1, protocol.Failed("E", "m", ""), None) is Ending.EXITED
    assert ending(3, protocol.Cancelled(None), Escalation.ASK) is Ending.COOPERATIVE
    assert ending(3, protocol.Cancelled(None, True), Escalation.TERMINATE) is Ending.TERMINATED
    assert ending(term, None, Escalation.TERMINATE) is Ending.TERMINATED
    assert ending(kill, None, Escalation.KILL) is Ending.KILLED
    assert ending(kill, None, None) is Ending.CRASH  # nobody here sent it
    assert ending(term, None, None) is Ending.CRASH
    assert ending(7, None, None) is Ending.CRASH
    assert ending(kill, None, Escalation.KILL, limit="memoryMiB") is Ending.LIMIT


def test_exit_status_and_tail() -> None:
    assert exit_status(0) == (0, None)
    assert exit_status(-signal.SIGSEGV) == (None, "SIGSEGV")
    assert exit_status(None) == (None, None)
    assert tail(["a", "bb", "ccc"], 7) == "bb\nccc"
    assert tail(["x" * 20], 7) == ""


def test_metrics_count_endings_cpu_and_peak_memory_by_type(fast: Server) -> None:
    from tests.test_observability import _samples, _value

    _finish(fast, "return", "completed")
    _finish(fast, "sigkill", "failed")
    samples = _samples(fast)
    endings = "jobsup_job_endings_total"
    assert _value(samples, endings, type="end", ended="exited") == 1
    assert _value(samples, endings, type="end", ended="crash") == 1
    assert _value(samples, "jobsup_job_cpu_seconds_count", type="end") == 2
    assert _value(samples, "jobsup_job_cpu_seconds_sum", type="end") > 0
    assert _value(samples, "jobsup_job_peak_rss_bytes_count", type="end") == 2
    assert _value(samples, "jobsup_job_peak_rss_bytes_sum", type="end") >= 2 * ALLOC_MIB << 20


def test_a_graceful_shutdown_keeps_how_each_stopped_job_ended(
    make_server: Callable[..., Server],
) -> None:
    """The runs a shutdown stops end on the way out: their resources are stored before it exits."""
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="4")
    jobs = [server.start_job({"type": "ticker"}) for _ in range(4)]
    for job_id in jobs:
        server.wait_status(job_id, "running")
    assert server.stop() == 0
    again = make_server(DATABASE_URL=server.env["DATABASE_URL"])
    for job_id in jobs:
        job = again.status(job_id)
        assert job["status"] == "cancelled", job
        assert job["resources"] is not None, job
        assert job["resources"]["ended"] == "cooperative"
