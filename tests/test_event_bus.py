"""The event bus itself: coalescing, bounds, resume, listeners (in process, on a real loop)."""

from __future__ import annotations

import asyncio
import json

import msgspec

from supervisor.events import EventBus, Kind
from supervisor.job import Job, Progress
from supervisor.state import JobStatus
from tests.helpers import pending_job


def _running(job_id: str) -> Job:
    job = pending_job("sleepy")
    return msgspec.structs.replace(job, id=job_id, status=JobStatus.RUNNING)


def test_progress_is_coalesced_per_job_and_keeps_ids_in_order() -> None:
    async def main() -> None:
        bus = EventBus()
        sub = bus.subscribe()
        a, b = _running("a"), _running("b")
        for i in range(100):
            a.progress = Progress(processed=i)
            bus.publish(Kind.PROGRESS, a)
        bus.publish(Kind.STARTED, b)
        a.progress = Progress(processed=100)
        bus.publish(Kind.PROGRESS, a)
        events = await sub.get()
        assert [(e.kind, e.job_id) for e in events] == [
            (Kind.STARTED, "b"),
            (Kind.PROGRESS, "a"),
        ]
        assert json.loads(events[1].data)["processed"] == 100
        assert [e.seq for e in events] == sorted(e.seq for e in events)

    asyncio.run(main())


def test_a_full_queue_drops_the_subscriber_and_a_closed_bus_ends_everyone() -> None:
    async def main() -> None:
        bus = EventBus(max_queue=3)
        slow, other = bus.subscribe(), bus.subscribe(max_queue=100)
        for i in range(4):
            bus.publish(Kind.CREATED, _running(f"j{i}"))
        assert slow.overflowed
        assert await slow.get() == []
        assert bus.subscribers() == 1
        assert len(await other.get()) == 4
        bus.close()
        assert await other.get() == []
        assert other.closed
        assert not other.overflowed
        assert bus.subscribe().closed

    asyncio.run(main())


def test_since_answers_from_the_buffer_or_not_at_all() -> None:
    bus = EventBus(buffer_events=5)
    first = bus.publish(Kind.CREATED, _running("a"))
    events = [bus.publish(Kind.STARTED, _running(f"b{i}")) for i in range(3)]
    assert bus.since(first.id) == events
    assert bus.since(events[-1].id) == []
    for i in range(10):
        bus.publish(Kind.STARTED, _running(f"c{i}"))
    assert bus.since(first.id) is None  # fell out of the buffer
    assert bus.since("not-an-id") is None
    assert bus.since(f"other-{bus.seq}") is None  # another process's id
    assert bus.since(f"{bus.epoch}-{bus.seq + 1}") is None  # not given yet


def test_the_buffer_is_bounded_in_bytes_and_large_results_are_left_out() -> None:
    bus = EventBus(buffer_bytes=10_000)
    job = _running("a")
    job.result = {"blob": "x" * 100_000}
    event = bus.publish(Kind.PARTIAL, job)
    assert json.loads(event.data) == {"jobId": "a", "result": None, "resultOmitted": True}
    for _ in range(200):
        bus.publish(Kind.STARTED, job)
    assert sum(len(e.data) for e in bus._buffer) <= 10_000


def test_listeners_see_every_event_and_a_failing_one_stays() -> None:
    bus = EventBus()
    seen: list[Kind] = []

    def broken(event: object) -> None:
        raise RuntimeError("a listener's bug")

    bus.listen(broken)
    bus.listen(lambda e: seen.append(e.kind))
    bus.publish(Kind.CREATED, _running("a"))
    bus.publish(Kind.FINISHED, _running("a"))
    assert seen == [Kind.CREATED, Kind.FINISHED]
    bus.unlisten(broken)
