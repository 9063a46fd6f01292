"""The state machine and the exit protocol, as pure functions."""

from __future__ import annotations

import signal

import pytest

from supervisor.state import (
    LIVE,
    STORED_BEFORE,
    TERMINAL,
    TRANSITIONS,
    Escalation,
    IllegalTransition,
    JobStatus,
    check_transition,
    classify_exit,
)
from workers import protocol


def test_no_move_leaves_a_terminal_state() -> None:
    for status in TERMINAL:
        assert TRANSITIONS[status] == frozenset()
        for target in JobStatus:
            with pytest.raises(IllegalTransition):
                check_transition(status, target)


def test_pending_cannot_complete_without_running() -> None:
    with pytest.raises(IllegalTransition):
        check_transition(JobStatus.PENDING, JobStatus.COMPLETED)
    check_transition(JobStatus.PENDING, JobStatus.RUNNING)


def test_reported_results_win_over_exit_codes() -> None:
    done = classify_exit(0, protocol.Done({"n": 1}), Escalation.ASK)
    assert done.status is JobStatus.COMPLETED  # finished before the cancel took hold
    assert done.result == {"n": 1}
    cancelled = classify_exit(3, protocol.Cancelled({"n": 0}, by_signal=True), Escalation.TERMINATE)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.cancel_mode == "terminated"
    failed = classify_exit(1, protocol.Failed("ValueError", "bad", "tb"), None, partial={"n": 2})
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert failed.error["type"] == "ValueError"
    assert failed.result == {"n": 2}


def test_silent_deaths() -> None:
    killed = classify_exit(-signal.SIGKILL, None, Escalation.KILL)
    assert killed.status is JobStatus.CANCELLED
    assert killed.cancel_mode == "killed"
    oom = classify_exit(-signal.SIGKILL, None, None)
    assert oom.status is JobStatus.FAILED
    assert oom.error is not None
    assert "SIGKILL" in oom.error["message"]
    assert "out of memory" in oom.error["message"]
    assert oom.error["signal"] == "SIGKILL"
    code = classify_exit(7, None, None)
    assert code.error is not None
    assert code.error["exitCode"] == 7
    assert "code 7" in code.error["message"]


def test_held_jobs_move_only_to_pending_or_cancelled() -> None:
    from supervisor.state import HELD, LIVE, STORED_BEFORE

    S = JobStatus
    assert {S.WAITING, S.AWAITING_APPROVAL} == HELD
    assert not HELD & (LIVE | TERMINAL)
    check_transition(S.WAITING, S.PENDING)
    check_transition(S.WAITING, S.AWAITING_APPROVAL)  # an approval step after its parent
    check_transition(S.AWAITING_APPROVAL, S.PENDING)  # approved
    for held in HELD:
        check_transition(held, S.CANCELLED)  # cancelled, rejected, expired, a failed parent
        for target in (S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLING, S.SCHEDULED):
            with pytest.raises(IllegalTransition):
                check_transition(held, target)
    with pytest.raises(IllegalTransition):
        check_transition(S.AWAITING_APPROVAL, S.WAITING)
    # A final write may replace a held row (a cancel); nothing goes back to being held.
    assert STORED_BEFORE[S.CANCELLED] >= HELD
    assert STORED_BEFORE[S.WAITING] == {S.WAITING}  # only itself: a retried write


def test_pause_and_resume_moves() -> None:
    check_transition(JobStatus.RUNNING, JobStatus.PAUSING)
    check_transition(JobStatus.PAUSING, JobStatus.PAUSED)
    check_transition(JobStatus.PAUSED, JobStatus.RUNNING)
    check_transition(JobStatus.RUNNING, JobStatus.PAUSED)  # frozen: paused at once
    for paused in (JobStatus.PAUSING, JobStatus.PAUSED):
        check_transition(paused, JobStatus.CANCELLING)  # cancel works from each
        check_transition(paused, JobStatus.PENDING)  # a shutdown's re-queue
        assert paused in LIVE
    for never in (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.CANCELLING):
        with pytest.raises(IllegalTransition):
            check_transition(never, JobStatus.PAUSING)
    with pytest.raises(IllegalTransition):
        check_transition(JobStatus.PAUSING, JobStatus.RUNNING)  # resumed only once paused


def test_the_store_may_overwrite_a_paused_job_but_never_a_final_one() -> None:
    assert {JobStatus.RUNNING, JobStatus.PAUSING, JobStatus.PAUSED} <= STORED_BEFORE[
        JobStatus.PAUSED
    ]
    assert JobStatus.PAUSED in STORED_BEFORE[JobStatus.CANCELLED]
    assert JobStatus.PAUSED in STORED_BEFORE[JobStatus.RUNNING]  # a resume
    assert not TERMINAL & STORED_BEFORE[JobStatus.PAUSED]
