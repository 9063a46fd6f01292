"""JobContext in-process: cancel points and the merging of progress reports."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator

import pytest

from workers import protocol
from workers.context import Channel, JobCancelled, JobContext


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
