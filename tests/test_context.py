"""JobContext in-process: cancel points and the merging of progress reports."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from workers import protocol
from workers.context import CancelPipe, Channel, JobCancelled, JobContext


@pytest.fixture
def ctx_and_inbox() -> Iterator[tuple[JobContext, multiprocessing.connection.Connection]]:
    receive, send = multiprocessing.Pipe(duplex=False)
    cancel = threading.Event()
    yield JobContext("job-1", "sqlite:///unused.db", Channel(send, cancel), cancel), receive
    receive.close()
    send.close()


def _drain(inbox: multiprocessing.connection.Connection) -> list[protocol.Message]:
    messages = []
    while inbox.poll(0):
        messages.append(protocol.decoder.decode(inbox.recv_bytes()))
    return messages


def test_a_burst_of_progress_arrives_as_its_latest_value(ctx_and_inbox: tuple) -> None:
    ctx, inbox = ctx_and_inbox
    ctx.progress_interval_s = 3600  # nothing past the first is due during the test
    for i in range(1000):
        ctx.progress(processed=i, total=1000, phase="work" if i == 0 else None)
    sent = _drain(inbox)
    assert sent == [protocol.Progress(0, 1000, None, "work")]  # the first goes at once
    ctx.progress(message="almost")
    ctx.partial({"done": 999})  # a partial sends what progress it follows first
    assert _drain(inbox) == [
        protocol.Progress(999, 1000, "almost", None),
        protocol.Partial({"done": 999}),
    ]


def test_sleep_sends_pending_progress_and_wakes_on_cancel(ctx_and_inbox: tuple) -> None:
    ctx, inbox = ctx_and_inbox
    ctx.progress_interval_s = 3600
    ctx.progress(processed=1)
    ctx.progress(processed=2)
    ctx._cancel.set()
    with pytest.raises(JobCancelled):
        ctx.sleep(60)  # returns at once: the cancel is already there
    assert _drain(inbox) == [protocol.Progress(1), protocol.Progress(2)]


@pytest.fixture
def cancel_pipe() -> Iterator[tuple[CancelPipe, int, int]]:
    read_end, write_end = os.pipe()
    flag = CancelPipe(read_end)
    yield flag, read_end, write_end
    flag.close()
    os.close(read_end)
    os.close(write_end)


def _later(action: Callable[[], object]) -> threading.Thread:
    thread = threading.Timer(0.05, action)
    thread.start()
    return thread


def test_cancel_pipe_wait_times_out_when_nothing_comes(cancel_pipe: tuple) -> None:
    flag, _, _ = cancel_pipe
    started = time.monotonic()
    assert flag.wait(0.05) is False
    assert time.monotonic() - started >= 0.05
    assert not flag.is_set()


def test_a_byte_on_the_cancel_pipe_wakes_a_sleeper(cancel_pipe: tuple) -> None:
    flag, _, write_end = cancel_pipe
    _later(lambda: os.write(write_end, b"x")).join()
    assert flag.wait(30) is True  # without the wake-up this would take 30 s
    assert flag.is_set()
    assert flag.wait(0) is True  # and it stays set


def test_the_supervisor_closing_the_pipe_wakes_a_sleeper() -> None:
    read_end, write_end = os.pipe()
    flag = CancelPipe(read_end)
    closer = _later(lambda: os.close(write_end))
    assert flag.wait(30) is True
    closer.join()
    flag.close()
    os.close(read_end)


def test_set_wakes_a_sleeper_on_an_empty_pipe(cancel_pipe: tuple) -> None:
    # The child's watch thread may read the byte off the pipe before the
    # sleeper polls it; its set() must wake the sleeper all the same.
    flag, _, _ = cancel_pipe
    setter = _later(flag.set)
    assert flag.wait(None) is True
    setter.join()
