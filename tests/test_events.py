"""The job event stream (SSE), read by real streaming clients from a real server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, wait_until
from tests.helpers import group_body, removal

TERMINAL = {"completed", "cancelled", "failed"}


class Sse:
    """One event (or, with kind ``:``, a comment line) of a text/event-stream."""

    def __init__(self, kind: str, id: str | None, data: Any) -> None:
        self.kind = kind
        self.id = id
        self.data = data

    def __repr__(self) -> str:
        return f"Sse({self.kind}, {self.id})"


def parse(lines: Iterator[str]) -> Iterator[Sse]:
    kind, event_id, data = "message", None, None
    for line in lines:
        if line.startswith(":"):
            yield Sse(":", None, line[1:].strip())
        elif line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "":
            if data is not None:
                yield Sse(kind, event_id, data)
            kind, event_id, data = "message", None, None


def stream(
    server: Server, path: str, headers: dict[str, str] | None = None, until: Any = None
) -> list[Sse]:
    """Read a stream to its end (or until ``until(event)``); comments left out."""
    events = []
    with server.client.stream("GET", path, headers=headers or {}) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in parse(response.iter_lines()):
            if event.kind == ":":
                continue
            events.append(event)
            if until is not None and until(event):
                break
    return events


def kinds(events: list[Sse]) -> list[str]:
    return [e.kind for e in events]


def _squash(names: list[str]) -> list[str]:
    """Runs of progress/partial collapsed to one "*" (how many there are is the job's)."""
    out: list[str] = []
    for name in names:
        name = "*" if name in ("progress", "partial") else name
        if not out or out[-1] != name or name != "*":
            out.append(name)
    return out


def test_a_job_streams_every_kind_in_order(server: Server) -> None:
    events: list[Sse] = []
    with server.client.stream("GET", "/admin/jobs/events") as response:
        lines = response.iter_lines()
        job_id = server.start_job({"type": "sleepy", "steps": 4, "stepMs": 100})
        for event in parse(lines):
            if event.kind != ":" and event.data.get("id", event.data.get("jobId")) == job_id:
                events.append(event)
                if event.kind == "finished":
                    break
    assert _squash(kinds(events)) == ["created", "started", "*", "finished"]
    assert events[-1].data["status"] == "completed"
    assert events[-1].data["result"] == {"steps": 4}
    progress = [e.data for e in events if e.kind == "progress"]
    assert progress[-1]["total"] == 4
    assert progress[-1]["phase"] == "sleeping"
    seqs = [int(e.id.split("-")[1]) for e in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)

    # The one-job stream: a snapshot of where it is, then it ends with finished.
    again = stream(server, f"/admin/jobs/{job_id}/events")
    assert kinds(again) == ["snapshot", "finished"]
    assert again[0].data["status"] == "completed"
    assert again[0].data["result"] == {"steps": 4}


def test_one_job_stream_from_the_start_ends_after_finished(server: Server) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 5, "stepMs": 150})
    events = stream(server, f"/admin/jobs/{job_id}/events")  # returns: the stream ended
    assert events[0].kind == "snapshot"
    assert events[-1].kind == "finished"
    assert events[-1].data["status"] == "completed"
    assert set(kinds(events[1:-1])) <= {"started", "progress", "partial"}
    assert server.client.get("/admin/jobs/nope/events").status_code == 404
    response = server.client.get(f"/admin/jobs/{job_id}/events?x=1")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "x"
    response = server.client.get("/admin/jobs/events?status=bogus")
    assert response.json()["error"]["field"] == "status"


def test_filters_on_the_every_job_stream(server: Server) -> None:
    with server.client.stream("GET", "/admin/jobs/events?type=quick") as response:
        lines = response.iter_lines()
        server.start_job({"type": "sleepy", "steps": 1, "stepMs": 10})
        quick = server.start_job({"type": "quick", "value": 7})
        seen = []
        for event in parse(lines):
            if event.kind == ":":
                continue
            seen.append(event)
            if event.kind == "finished":
                break
    assert {e.data.get("type") for e in seen if "type" in e.data} == {"quick"}
    assert seen[-1].data["id"] == quick


def test_a_queued_job_cancelled_before_it_started_ends_its_stream(make_server: Any) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1")
    blocker = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(blocker, "running")
    queued = server.start_job({"type": "quick"})
    with server.client.stream("GET", f"/admin/jobs/{queued}/events") as response:
        lines = response.iter_lines()
        events = parse(lines)
        assert next(events).data["status"] == "pending"
        assert server.client.post(f"/admin/jobs/{queued}/cancel").status_code == 200
        rest = [e for e in events if e.kind != ":"]
    assert kinds(rest) == ["finished"]
    assert rest[0].data["status"] == "cancelled"
    server.client.post(f"/admin/jobs/{blocker}/cancel")


def test_a_label_filter_on_the_every_job_stream(server: Server) -> None:
    for group in ("g1", "g2"):
        response = server.client.put(f"/admin/groups/{group}", json=group_body(inactive=2))
        assert response.status_code == 200, response.text
    with server.client.stream("GET", "/admin/jobs/events?groupWaId=g2") as response:
        lines = response.iter_lines()
        server.start_job(removal("g1", dryRun=True))
        wanted = server.start_job(removal("g2", dryRun=True))
        seen = []
        for event in parse(lines):
            if event.kind == ":":
                continue
            seen.append(event)
            if event.kind == "finished":
                break
    assert {e.data.get("id", e.data.get("jobId")) for e in seen} == {wanted}
    assert seen[-1].data["result"]["groupWaId"] == "g2"


def test_resume_from_the_buffer_and_with_a_snapshot(server: Server) -> None:
    job_id = server.start_job({"type": "chatty", "count": 30, "stepMs": 60})
    path = f"/admin/jobs/{job_id}/events"
    first = stream(server, path, until=lambda e: e.kind == "progress")
    last = first[-1]
    rest = stream(server, path, headers={"Last-Event-ID": last.id})
    # What it missed, from the buffer: no snapshot, nothing it already had.
    assert rest[0].kind != "snapshot", kinds(rest)
    assert all(int(e.id.split("-")[1]) > int(last.id.split("-")[1]) for e in rest)
    assert rest[-1].kind == "finished"
    # An id this server never gave (another process's, or garbage): a fresh snapshot.
    again = stream(server, path, headers={"Last-Event-ID": "ffffff-3"})
    assert kinds(again) == ["snapshot", "finished"]


def test_resume_past_the_buffer_gets_a_snapshot(make_server: Any) -> None:
    server = make_server(JOBSUP_EVENTS_BUFFER="5")
    job_id = server.start_job({"type": "chatty", "count": 40, "stepMs": 30})
    path = f"/admin/jobs/{job_id}/events"
    first = stream(server, path, until=lambda e: e.kind == "progress")
    wait_until(lambda: server.status(job_id)["progress"]["processed"] >= 20)
    rest = stream(server, path, headers={"Last-Event-ID": first[-1].id})
    assert rest[0].kind == "snapshot"
    assert rest[0].data["progress"]["processed"] >= 20
    assert rest[-1].kind == "finished"


def test_keep_alive_comments_on_an_idle_stream(make_server: Any) -> None:
    server = make_server(JOBSUP_EVENTS_KEEPALIVE_S="0.2")
    with server.client.stream("GET", "/admin/jobs/events") as response:
        lines = response.iter_lines()
        comments = 0
        for event in parse(lines):
            if event.kind == ":" and event.data == "keep-alive":
                comments += 1
            if comments == 2:
                break


def test_a_subscriber_that_falls_behind_is_told_and_dropped(make_server: Any) -> None:
    # A stream written at most once a minute: every event after the first waits in
    # its queue of 4, as it would for a client that stopped reading.
    server = make_server(JOBSUP_EVENTS_QUEUE="4", JOBSUP_EVENTS_INTERVAL_S="60")
    with server.client.stream("GET", "/admin/jobs/events") as response:
        lines = response.iter_lines()
        ids = [server.start_job({"type": "quick", "value": i}) for i in range(6)]
        seen = [e for e in parse(lines) if e.kind != ":"]  # to the stream's end
    assert seen[-1].kind == "overflow", kinds(seen)
    assert seen[-1].id is None  # resuming from the last event received still works
    assert "fell too far behind" in seen[-1].data["message"]
    for job_id in ids:  # the jobs did not wait for the subscriber
        server.wait_status(job_id, "completed")


def test_a_stuck_reader_slows_neither_the_job_nor_the_api(make_server: Any) -> None:
    server = make_server(JOBSUP_EVENTS_INTERVAL_S="0")
    job_id = server.start_job({"type": "chatty", "count": 20_000, "messageBytes": 2000})
    with server.client.stream("GET", f"/admin/jobs/{job_id}/events") as response:
        lines = response.iter_lines()
        assert next(parse(lines)).kind == "snapshot"
        # Stop reading: the server's writes fill the socket and then wait.
        for _ in range(20):
            assert server.client.get(f"/admin/jobs/{job_id}/status").status_code == 200
        done = server.wait_status(job_id, "completed", timeout=90)
        assert done["progress"]["processed"] == 20_000
        rest = [e for e in parse(lines) if e.kind != ":"]  # read again: to the end
    # It got the end, and far fewer progress events than were sent (coalesced).
    assert rest[-1].kind == "finished"
    assert rest[-1].data["status"] == "completed"
    assert len(rest) < 20_000


def test_two_hundred_subscribers_at_once(server: Server) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 4, "stepMs": 500})

    async def one(client: httpx.AsyncClient) -> list[str]:
        names = []
        async with client.stream("GET", f"/admin/jobs/{job_id}/events") as response:
            assert response.status_code == 200
            kind = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                    names.append(kind)
        return names

    async def all_of_them() -> list[list[str]]:
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(
            base_url=server.url, headers=server.client.headers, limits=limits, timeout=60
        ) as client:
            return await asyncio.gather(*(one(client) for _ in range(200)))

    results = asyncio.run(all_of_them())
    assert len(results) == 200
    for names in results:
        assert names[0] == "snapshot", names
        assert names[-1] == "finished", names
    assert server.client.get(f"/admin/jobs/{job_id}/status").json()["status"] == "completed"


def test_open_streams_do_not_hold_up_shutdown(server: Server) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(job_id, "running")
    with (
        server.client.stream("GET", f"/admin/jobs/{job_id}/events") as one,
        server.client.stream("GET", "/admin/jobs/events") as every,
    ):
        one_lines, every_lines = one.iter_lines(), every.iter_lines()
        next(one_lines)
        next(every_lines)
        server.signal(signal.SIGTERM)
        list(one_lines)  # both end
        list(every_lines)
    assert server.stop() == 0
    assert "timeout graceful shutdown exceeded" not in server.log()


@pytest.mark.postgres
def test_a_job_streams_from_an_instance_that_does_not_own_it(pg_url: str, make_server: Any) -> None:
    cluster = {"JOBSUP_HEARTBEAT_S": "0.3", "JOBSUP_NODE_TIMEOUT_S": "2", "JOBSUP_POLL_S": "1"}
    a = make_server(DATABASE_URL=pg_url, JOBSUP_EVENTS_FOLLOW_S="0.1", **cluster)
    b = make_server(DATABASE_URL=pg_url, JOBSUP_EVENTS_FOLLOW_S="0.1", **cluster)
    job_id = a.start_job({"type": "chatty", "count": 20, "stepMs": 150})
    job = a.wait_status(job_id, "running")
    me = {s: s.client.get("/healthz").json()["instance"] for s in (a, b)}
    other = b if job["owner"] == me[a] else a
    with other.client.stream("GET", "/admin/jobs/events") as every:
        lines = every.iter_lines()
        events = stream(other, f"/admin/jobs/{job_id}/events")
        assert events[0].kind == "snapshot"
        assert events[-1].kind == "finished"
        assert events[-1].data["status"] == "completed"
        assert events[-1].data["result"] == {"count": 20}
        assert "progress" in kinds(events)
        # The every-job stream of the other instance follows it too.
        seen = []
        for event in parse(lines):
            if event.kind != ":" and event.data.get("id", event.data.get("jobId")) == job_id:
                seen.append(event.kind)
                if event.kind == "finished":
                    break
        assert seen[0] == "snapshot"
        assert seen[-1] == "finished"


def test_a_resumable_job_stopped_by_a_signal_streams_requeued_then_runs_again(
    make_server: Any,
) -> None:
    """A platform's SIGTERM to the child: the job goes back to the queue, then resumes."""
    server = make_server(JOBSUP_SIGTERM_HOLD_S="0.5")
    job_id = server.start_job({"type": "counter", "to": 30, "stepMs": 50})
    pid = server.wait_status(job_id, "running")["pid"]
    events: list[Sse] = []
    opened = threading.Event()

    def read() -> None:
        path = f"/admin/jobs/{job_id}/events"
        with server.client.stream("GET", path) as response:
            for event in parse(response.iter_lines()):
                if event.kind != ":":
                    events.append(event)
                    opened.set()

    reader = threading.Thread(target=read)
    reader.start()
    assert opened.wait(30)
    wait_until(lambda: server.status(job_id)["savedAt"] is not None)
    os.kill(pid, signal.SIGTERM)
    reader.join(60)  # the stream ends after finished
    assert not reader.is_alive()
    names = kinds(events)
    assert "requeued" in names, names
    assert "started" in names[names.index("requeued") :], names
    assert events[-1].kind == "finished"
    assert events[-1].data["status"] == "completed"
    assert events[-1].data["resumes"] == 1
