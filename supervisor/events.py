"""The job event bus: every change the table applies, published once, as a typed event.

``JobTable`` publishes at the single places it applies a change: a job
created (inserted), started, its progress, its partial result, cancelling,
pausing, paused, resumed, finished (once its final state is stored). The SSE routes, the dashboard,
metrics and the audit log subscribe; nobody re-derives events by polling the
store, except ``supervisor.follow`` for jobs another instance owns.

Each ``Event`` carries its kind, the job's id, type, status and label (for
filters) and ``data``: the JSON an SSE ``data:`` line sends, encoded once
for every subscriber. Ids are opaque strings, ``<epoch>-<seq>``: the
sequence increases by one per event within one server process; the epoch
changes with each process, so an id from another process (or instance) is
never mistaken for one of ours.

Two ways to subscribe, both on the event loop:

- ``bus.listen(fn)``: ``fn(event)`` is called inline for every event
  (counters, metrics). It must be quick and never block; an exception it
  raises is logged and the listener stays. ``bus.unlisten(fn)`` removes it.

- ``sub = bus.subscribe(match)``: a queue of the events ``match(event)``
  accepts, bounded at ``max_queue`` events. ``progress`` and ``partial``
  events are coalesced per job (only the latest waits in the queue), so a
  chatty job costs a slow subscriber one entry. Past the bound the
  subscriber is dropped: ``sub.overflowed`` is True and ``get`` returns
  ``[]``. Use it as::

      sub = bus.subscribe(lambda e: e.job_id == wanted)
      try:
          while events := await sub.get():
              ...
      finally:
          sub.close()

  ``get`` returns ``[]`` once the subscription ends: closed, overflowed, or
  the bus closed (the server is shutting down).

``bus.since(last_id)`` answers the events after ``last_id`` still in the
ring buffer (bounded by count and bytes), or None when it fell out of it
(or is not one of this process's ids): the caller sends a fresh snapshot.
No thread, no task per subscriber: publishing appends to dicts and sets a
flag; a subscriber's own coroutine does its writing.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import msgspec

from supervisor import wire
from supervisor.job import Job, summary
from supervisor.state import JobStatus
from workers import registry

log = logging.getLogger("jobsup.events")

# A result (in a partial or finished event) encoding larger than this is left
# out of the event (``"result": null, "resultOmitted": true``): read it from
# GET /status. The ring buffer would otherwise hold megabytes per job.
MAX_EVENT_RESULT_BYTES = 64 * 1024
# Jobs whose label is remembered for filtering; the oldest is forgotten first.
LABELS_KEPT = 10_000

_encoder = msgspec.json.Encoder()


def _encode(value: Any) -> bytes:
    """Jobs (and their times) as the API's answers encode them."""
    return wire.encode(value)


class Kind(StrEnum):
    SNAPSHOT = "snapshot"
    CREATED = "created"
    STARTED = "started"
    PROGRESS = "progress"
    PARTIAL = "partial"
    CANCELLING = "cancelling"
    PAUSING = "pausing"  # asked to pause; holds at its next context call
    PAUSED = "paused"  # held (or frozen)
    RESUMED = "resumed"  # running again after a pause
    # A resumable job back in the queue (a shutdown, a platform's SIGTERM), or
    # a failed attempt waiting (scheduled) for its retry.
    REQUEUED = "requeued"
    FINISHED = "finished"
    APPROVED = "approved"  # an approval step approved: pending now
    # A held job its parent's end released: pending, or awaiting approval.
    RELEASED = "released"


# Only the latest of these waits in a subscriber's queue, per job.
COALESCED = frozenset({Kind.PROGRESS, Kind.PARTIAL})


class ProgressData(msgspec.Struct, rename="camel", gc=False):
    job_id: str
    status: JobStatus
    processed: int
    total: int | None
    message: str | None
    phase: str | None


class PartialData(msgspec.Struct, rename="camel", gc=False):
    job_id: str
    result: Any
    result_omitted: bool = False


class Event(msgspec.Struct, frozen=True, gc=False):
    id: str
    seq: int
    kind: Kind
    job_id: str
    job_type: str
    status: JobStatus
    label: str | None  # "name=value" (``store.jobs.label_of``), or None
    # The whole SSE event (event:, id:, data: lines), made once for every
    # stream. The replay buffer holds thousands: the data line's JSON is read
    # off it (``data``), not kept a second time.
    frame: bytes

    @property
    def data(self) -> bytes:
        """The JSON of the SSE ``data:`` line (JSON has no raw newline: the first is the id's)."""
        return self.frame[self.frame.index(b"\ndata: ") + 7 : -2]


def _event(
    event_id: str,
    seq: int,
    kind: Kind,
    job: Job,
    label: str | None,
    data: bytes,
) -> Event:
    frame = b"event: %s\nid: %s\ndata: %s\n\n" % (kind.value.encode(), event_id.encode(), data)
    return Event(event_id, seq, kind, job.id, job.type, job.status, label, frame)


def _label(job: Job) -> str | None:
    try:
        job_type = registry.get(job.type)
    except KeyError:
        return None
    if job_type.label is None:
        return None
    try:
        config = msgspec.json.decode(job.config, type=job_type.config)
    except msgspec.DecodeError:
        return None
    value = job_type.label.value(config)
    return None if value is None else f"{job_type.label.name}={value}"


def _bounded_result(result: Any) -> tuple[Any, bool]:
    encoded = _encoder.encode(result)
    if len(encoded) > MAX_EVENT_RESULT_BYTES:
        return None, True
    return msgspec.Raw(encoded), False


def job_data(job: Job, with_result: bool, result_omitted: bool = False) -> bytes:
    """A job as the API shows it: whole (``GET /status``) or without its result (lists)."""
    if not with_result:
        return _encode(summary(job))
    result, omitted = _bounded_result(job.result)
    if omitted or result_omitted:
        body = msgspec.structs.asdict(msgspec.structs.replace(job, result=None))
        return _encode(_camel(body) | {"resultOmitted": True})
    return _encode(msgspec.structs.replace(job, result=result))


def _camel(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, value in values.items():
        head, *rest = name.split("_")
        out[head + "".join(p.title() for p in rest)] = value
    return out


class Subscription:
    """One subscriber's bounded queue (see the module docstring).

    It waits on one future at a time (``_sleep``), resolved by a timer or
    by the event it waits for: no ``asyncio.Event``, no timeout exception
    per wait, for the hundreds of streams a server may hold.
    """

    def __init__(self, bus: EventBus, match: Callable[[Event], bool], max_queue: int) -> None:
        self._bus = bus
        self.match = match
        self.max_queue = max_queue
        # Keyed by seq, or by (kind, job) for coalesced kinds: insertion order
        # is delivery order, and a coalesced event moves to the end.
        self._pending: dict[Any, Event] = {}
        self._waiter: asyncio.Future[None] | None = None
        self._wake_on_put = False  # get() waits for events; pause() only for the end
        self.overflowed = False
        self.closed = False

    def _put(self, event: Event) -> None:
        if event.kind in COALESCED:
            key: Any = (event.kind, event.job_id)
            self._pending.pop(key, None)
        else:
            key = event.seq
        self._pending[key] = event
        if len(self._pending) > self.max_queue:
            self.overflowed = True
            self._end()
        elif self._wake_on_put:
            self._notify()

    def _end(self) -> None:
        self._pending.clear()
        self.closed = True
        self._bus._subs.discard(self)
        self._notify()

    def _notify(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _sleep(self, seconds: float | None, wake_on_put: bool) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        self._wake_on_put = wake_on_put
        timer = None if seconds is None else loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiter = None
            self._wake_on_put = False

    async def get(self, wait_s: float | None = None) -> list[Event]:
        """The events waiting, in order; waits up to ``wait_s`` (None: no limit) for one.

        ``[]`` once the subscription ended (``closed``; ``overflowed`` says
        if it was dropped), or when ``wait_s`` passed with none.
        """
        if not self._pending and not self.closed:
            await self._sleep(wait_s, wake_on_put=True)
        while not self._pending and not self.closed and wait_s is None:
            await self._sleep(None, wake_on_put=True)
        events = list(self._pending.values())
        self._pending.clear()
        return events

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (events wait, coalescing), or less if the subscription ends."""
        if not self.closed:
            await self._sleep(seconds, wake_on_put=False)

    def drop_through(self, seq: int) -> None:
        """Forget the waiting events up to ``seq`` (a snapshot taken since shows them)."""
        for key in [k for k, e in self._pending.items() if e.seq <= seq]:
            del self._pending[key]

    def close(self) -> None:
        if not self.closed:
            self._end()


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EventBus:
    def __init__(
        self, buffer_events: int = 10_000, buffer_bytes: int = 8 << 20, max_queue: int = 1000
    ) -> None:
        self.epoch = secrets.token_hex(3)
        self.seq = 0
        self.buffer_events = buffer_events
        self.buffer_bytes = buffer_bytes
        self.max_queue = max_queue
        self._buffer: deque[Event] = deque()
        self._buffered_bytes = 0
        self._subs: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._labels: OrderedDict[str, str | None] = OrderedDict()
        self.closed = False

    # -- publishing ----------------------------------------------------------

    @property
    def last_id(self) -> str:
        return f"{self.epoch}-{self.seq}"

    def label(self, job: Job) -> str | None:
        label = self._labels.get(job.id, "")
        if label == "":
            label = _label(job)
            self._labels[job.id] = label
            if len(self._labels) > LABELS_KEPT:
                self._labels.popitem(last=False)
        return label

    def knows(self, job_id: str) -> bool:
        """Whether this bus published about the job and has not seen it finish."""
        return job_id in self._labels

    def publish(self, kind: Kind, job: Job, result_omitted: bool = False) -> Event:
        """Publish one event about ``job`` as it is now."""
        if kind is Kind.PROGRESS:
            p = job.progress
            data = _encode(
                ProgressData(job.id, job.status, p.processed, p.total, p.message, p.phase)
            )
        elif kind is Kind.PARTIAL:
            result, omitted = _bounded_result(job.result)
            data = _encode(PartialData(job.id, result, omitted))
        else:
            data = job_data(job, kind is Kind.FINISHED, result_omitted)
        return self._emit(kind, job, data)

    def _emit(self, kind: Kind, job: Job, data: bytes) -> Event:
        self.seq += 1
        event = _event(f"{self.epoch}-{self.seq}", self.seq, kind, job, self.label(job), data)
        self._buffer.append(event)
        self._buffered_bytes += len(event.frame)
        while self._buffer and (
            len(self._buffer) > self.buffer_events or self._buffered_bytes > self.buffer_bytes
        ):
            self._buffered_bytes -= len(self._buffer.popleft().frame)
        if kind is Kind.FINISHED:
            self._labels.pop(job.id, None)
        for fn in self._listeners:
            try:
                fn(event)
            except Exception:
                log.exception("an event listener failed")
        for sub in list(self._subs):
            if sub.match(event):
                sub._put(event)
        return event

    def snapshot(self, job: Job, with_result: bool) -> Event:
        """A ``snapshot`` event for one subscriber: the job as it is, at the current id.

        Not buffered, not broadcast; its id is the latest event's, so a
        client resuming from it gets what follows.
        """
        return _event(
            self.last_id, self.seq, Kind.SNAPSHOT, job, self.label(job), job_data(job, with_result)
        )

    def finished_copy(self, snapshot: Event) -> Event:
        """The ``finished`` event a stream ends with when its snapshot is final already."""
        frame = b"event: %s\n%s" % (Kind.FINISHED.value.encode(), snapshot.frame.split(b"\n", 1)[1])
        return msgspec.structs.replace(snapshot, kind=Kind.FINISHED, frame=frame)

    # -- subscribing ---------------------------------------------------------

    def subscribe(
        self, match: Callable[[Event], bool] = lambda e: True, max_queue: int | None = None
    ) -> Subscription:
        sub = Subscription(self, match, max_queue or self.max_queue)
        if self.closed:
            sub.closed = True
        else:
            self._subs.add(sub)
        return sub

    def listen(self, fn: Callable[[Event], None]) -> None:
        self._listeners.append(fn)

    def unlisten(self, fn: Callable[[Event], None]) -> None:
        self._listeners.remove(fn)

    def subscribers(self) -> int:
        return len(self._subs)

    def parse_id(self, event_id: str) -> int | None:
        """The sequence number of one of this process's ids; None for any other."""
        epoch, _, seq = event_id.strip().partition("-")
        if epoch != self.epoch or not seq.isdigit():
            return None
        return int(seq)

    def since(self, event_id: str) -> list[Event] | None:
        """The buffered events after ``event_id``; None if some of them are gone."""
        seq = self.parse_id(event_id)
        if seq is None or seq > self.seq:
            return None
        if seq == self.seq:
            return []
        if not self._buffer or self._buffer[0].seq > seq + 1:
            return None
        return [e for e in self._buffer if e.seq > seq]

    def close(self) -> None:
        """End every subscription (shutdown): their streams end, holding nothing up."""
        self.closed = True
        for sub in list(self._subs):
            sub.close()
