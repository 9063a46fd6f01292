"""Job states, the legal moves between them, and how a child's exit reads."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from workers import limits as limits_
from workers import protocol


class JobStatus(StrEnum):
    SCHEDULED = "scheduled"  # waits for its time (runAt, delayS, a retry's backoff)
    WAITING = "waiting"  # waits for the job it runs after (``after``) to end
    AWAITING_APPROVAL = "awaiting_approval"  # an approval step: waits for approve or reject
    PENDING = "pending"
    RUNNING = "running"
    CANCELLING = "cancelling"
    PAUSING = "pausing"  # asked to pause; stops at its next context call
    PAUSED = "paused"  # held at a context call (or frozen); keeps its slot
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


S = JobStatus

TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.WAITING: frozenset({S.PENDING, S.AWAITING_APPROVAL, S.CANCELLED}),
    S.AWAITING_APPROVAL: frozenset({S.PENDING, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.PENDING, S.CANCELLED}),
    S.PENDING: frozenset({S.RUNNING, S.CANCELLING, S.CANCELLED, S.FAILED, S.SCHEDULED}),
    S.RUNNING: frozenset(
        {
            S.COMPLETED,
            S.FAILED,
            S.CANCELLING,
            S.CANCELLED,
            S.PENDING,
            S.SCHEDULED,
            S.PAUSING,
            S.PAUSED,
        }
    ),
    S.CANCELLING: frozenset({S.CANCELLED, S.COMPLETED, S.FAILED}),
    S.PAUSING: frozenset(
        {S.PAUSED, S.COMPLETED, S.FAILED, S.CANCELLING, S.CANCELLED, S.PENDING, S.SCHEDULED}
    ),
    S.PAUSED: frozenset(
        {S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELLING, S.CANCELLED, S.PENDING, S.SCHEDULED}
    ),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
}
# PENDING -> CANCELLING: cancelled while its child was being started.
# RUNNING -> PENDING is the re-queue of an idempotent job whose instance died.
# SCHEDULED -> PENDING: its time came (the claim moves it). RUNNING -> SCHEDULED
# (and PENDING -> SCHEDULED, a child that died before it began): a failed
# attempt that its retry policy runs again after a backoff.
# WAITING -> PENDING (or AWAITING_APPROVAL, an approval step): the job it runs
# after ended as its ``after.when`` asks; WAITING -> CANCELLED: it did not
# (reason ``dependency``), or the chain was cancelled. AWAITING_APPROVAL ->
# PENDING is an approval, -> CANCELLED a rejection or its expiry. These moves
# are made by the store (``supervisor.store.chains``), never by a run.
# RUNNING -> PAUSING -> PAUSED -> RUNNING: a cooperative pause and its resume;
# RUNNING -> PAUSED: a frozen job (SIGSTOP) is paused at once. Whatever ends a
# running job ends a pausing or paused one too (a cancel, a crash, a job that
# finished before it reached a context call); PENDING is a shutdown's re-queue.

TERMINAL = frozenset({S.COMPLETED, S.CANCELLED, S.FAILED})
LIVE = frozenset({S.SCHEDULED, S.PENDING, S.RUNNING, S.CANCELLING, S.PAUSING, S.PAUSED})
# A child runs the job (pausing and paused ones hold their slot and their child).
ACTIVE = frozenset({S.RUNNING, S.PAUSING, S.PAUSED})
# Held back: stored rows the claim does not pick, with no owner and no child,
# until the store releases them (a parent's end, an approval). Neither live
# (no instance holds them, no exclusive key) nor final.
HELD = frozenset({S.WAITING, S.AWAITING_APPROVAL})


def _stored_before(new: JobStatus) -> frozenset[JobStatus]:
    """The stored states a write of ``new`` may replace: those ``new`` is reachable from.

    The in-memory table checks each move; the store may be a few moves
    behind (a passing state written with the next flush, or skipped), so a
    write may replace any state the moves could have passed through, but
    never a final one.
    """
    before = LIVE | HELD
    found = {new} if new in before else set()
    frontier = {old for old in before if new in TRANSITIONS[old]}
    while frontier:
        found |= frontier
        frontier = {old for old in before if TRANSITIONS[old] & frontier} - found
    return frozenset(found)


# The storage-side twin of TRANSITIONS: the states a front write may overwrite.
STORED_BEFORE: dict[JobStatus, frozenset[JobStatus]] = {s: _stored_before(s) for s in JobStatus}


class IllegalTransition(Exception):
    pass


def check_transition(old: JobStatus, new: JobStatus) -> None:
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{old} -> {new}")


class CancelMode(StrEnum):
    COOPERATIVE = "cooperative"  # the job stopped at a cancel point
    TERMINATED = "terminated"  # SIGTERM turned into JobCancelled, or killed the child
    KILLED = "killed"  # SIGKILL
    INTERRUPTED = "interrupted"  # its supervisor died while it was being cancelled


class Escalation(StrEnum):
    """How far the supervisor went to stop a job."""

    ASK = "ask"  # one byte on the cancel pipe: the job stops at its next cancel point
    TERMINATE = "terminate"
    KILL = "kill"


class RunPhase(StrEnum):
    """Where one child's run is in its life (``supervisor.runs.Run``)."""

    STARTING = "starting"  # being forked or given its spec; nothing watched yet
    ATTACHED = "attached"  # its pipe, sentinel and pidfd are watched
    SETTLED = "settled"  # the job's final state is decided (and being written); slot free
    ENDED = "ended"  # the child is gone; the run is over


RUN_PHASES: dict[RunPhase, frozenset[RunPhase]] = {
    RunPhase.STARTING: frozenset({RunPhase.ATTACHED}),
    RunPhase.ATTACHED: frozenset({RunPhase.SETTLED}),
    RunPhase.SETTLED: frozenset({RunPhase.ENDED}),
    RunPhase.ENDED: frozenset(),
}


def check_phase(old: RunPhase, new: RunPhase) -> None:
    if new not in RUN_PHASES[old]:
        raise IllegalTransition(f"run {old} -> {new}")


@dataclass(frozen=True, slots=True)
class Outcome:
    status: JobStatus
    result: Any = None
    error: dict[str, Any] | None = None
    cancel_mode: CancelMode | None = None


def describe_exit(exitcode: int) -> str:
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (perhaps out of memory?)" if -exitcode == signal.SIGKILL else ""
        return f"child killed by {name}{hint}"
    return f"child exited with code {exitcode}"


def job_error(reason: str, type_: str, message: str, **more: Any) -> dict[str, Any]:
    """A job's ``error``: why it ended (``reason``), what (``type``, ``message``), and details."""
    return {"reason": reason, "type": type_, "message": message, **more}


def _crash(exitcode: int) -> dict[str, Any]:
    return job_error(
        "crashed",
        "ChildDied",
        describe_exit(exitcode) + " without reporting a result",
        exitCode=exitcode if exitcode >= 0 else None,
        signal=signal.Signals(-exitcode).name if exitcode < 0 and _is_signal(-exitcode) else None,
    )


def _is_signal(number: int) -> bool:
    try:
        signal.Signals(number)
    except ValueError:
        return False
    return True


def classify_exit(
    exitcode: int | None,
    last: protocol.Message | None,
    escalation: Escalation | None,
    partial: Any = None,
    *,
    limits: limits_.Limits | None = None,
    timed_out: bool = False,
) -> Outcome:
    """Turn how a child ended into the job's final state.

    ``last`` is the child's final report (Done, Cancelled or Failed) if it
    sent one, and then ``exitcode`` may be None (not read yet);
    ``escalation`` is how far a cancel request went, None if none was made;
    ``partial`` is the last partial result received; ``limits`` are the
    job's, and ``timed_out`` says the escalation was its timeout's, not a cancel.
    """
    if isinstance(last, protocol.Done):
        return Outcome(S.COMPLETED, result=last.result)
    hit = _limit_hit(exitcode, last, limits, timed_out)
    if hit is not None:
        reason, type_, message = hit
        result = last.result if isinstance(last, protocol.Cancelled) else partial
        return Outcome(S.FAILED, result=result, error=job_error(reason, type_, message))
    if isinstance(last, protocol.Cancelled):
        mode = CancelMode.TERMINATED if last.by_signal else CancelMode.COOPERATIVE
        return Outcome(S.CANCELLED, result=last.result, cancel_mode=mode)
    if isinstance(last, protocol.Failed):
        error = job_error(last.reason, last.type, last.message, traceback=last.traceback)
        return Outcome(S.FAILED, result=partial, error=error)
    assert exitcode is not None, "a silent child is classified by its exit code"
    if escalation is Escalation.KILL and exitcode == -signal.SIGKILL:
        return Outcome(S.CANCELLED, result=partial, cancel_mode=CancelMode.KILLED)
    if escalation is not None and exitcode == -signal.SIGTERM:
        return Outcome(S.CANCELLED, result=partial, cancel_mode=CancelMode.TERMINATED)
    return Outcome(S.FAILED, result=partial, error=_crash(exitcode))


def _limit_hit(
    exitcode: int | None,
    last: protocol.Message | None,
    limits: limits_.Limits | None,
    timed_out: bool,
) -> tuple[str, str, str] | None:
    """The limit that stopped the job, if one did: (reason, type, message) of its error.

    A child that hit a limit and could still report says so (Failed with
    its reason, read as any failure); one that could not is read from its
    exit: EXIT_MEMORY, or killed by SIGXCPU.
    """
    if timed_out:  # the timeout's stop ladder, whichever step ended it
        return "timeout", "Timeout", limits_.timeout_message(limits.timeout_s if limits else None)
    if last is not None:
        return None
    if exitcode == protocol.EXIT_MEMORY:
        mib = limits.memory_mib if limits else None
        return "memory_limit", "MemoryLimit", limits_.memory_message(mib)
    if exitcode == -signal.SIGXCPU:
        return "cpu_limit", "CpuLimit", limits_.cpu_message(limits.cpu_s if limits else None)
    return None
