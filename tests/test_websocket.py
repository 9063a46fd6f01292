"""The event stream over WebSocket, with a real client (``websockets``) and a real server.

The same events as SSE (a snapshot, then the changes; a replay from an
event id), the same access rules (a bearer header, or the session cookie
with the server's own Origin), and the slow-consumer rules: a subscriber
that falls ``events_queue`` events behind is closed with 1013, and one that
does not read at all is dropped, while the server's memory stays bounded.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.conftest import VIEWER_TOKEN, Server, wait_until


def _ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


@contextmanager
def _socket(
    server: Server, path: str, token: str | None = None, **options: Any
) -> Iterator[ClientConnection]:
    headers = dict(options.pop("additional_headers", {}))
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    with connect(
        _ws_url(server, path), additional_headers=headers, open_timeout=10, **options
    ) as ws:
        yield ws


def _read_all(ws: ClientConnection, timeout: float = 30) -> list[dict[str, Any]]:
    """Every message until the server closes the stream."""
    messages = []
    try:
        while True:
            messages.append(json.loads(ws.recv(timeout=timeout)))
    except ConnectionClosed:
        return messages


def _read_until(ws: ClientConnection, kind: str, job_id: str) -> list[dict[str, Any]]:
    messages = []
    while True:
        message = json.loads(ws.recv(timeout=30))
        messages.append(message)
        if message["event"] == kind and message["data"].get("id") == job_id:
            return messages


def _refused(server: Server, path: str, **options: Any) -> tuple[int, bytes]:
    with pytest.raises(InvalidStatus) as refused, _socket(server, path, **options):
        pass
    return refused.value.response.status_code, refused.value.response.body or b""


def test_one_job_streams_its_snapshot_then_changes_and_closes_after_finished(
    server: Server,
) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 3, "stepMs": 200})
    with _socket(server, f"/admin/jobs/{job_id}/ws", server.token) as ws:
        messages = _read_all(ws)
        assert ws.close_code == 1000
        assert ws.close_reason == "finished"
    kinds = [m["event"] for m in messages]
    assert kinds[0] == "snapshot"
    assert kinds[-1] == "finished"
    assert messages[-1]["data"]["status"] == "completed"
    assert messages[-1]["data"]["result"] == {"steps": 3}
    assert all(m["data"].get("jobId", m["data"].get("id")) == job_id for m in messages)


def test_a_stream_resumes_after_an_event_id(server: Server) -> None:
    with _socket(server, "/admin/jobs/ws", server.token) as ws:
        job_id = server.start_job({"type": "quick", "value": 1})
        first = _read_until(ws, "finished", job_id)
    created = next(i for i, m in enumerate(first) if m["event"] == "created")
    resumed_from = first[created]["id"]
    with _socket(server, f"/admin/jobs/ws?lastEventId={resumed_from}", server.token) as ws:
        replayed = _read_until(ws, "finished", job_id)
    assert [(m["event"], m["id"]) for m in replayed] == [
        (m["event"], m["id"]) for m in first[created + 1 :]
    ]
    # The one-job stream resumes the same way, and ends with the job.
    with _socket(server, f"/admin/jobs/{job_id}/ws?lastEventId={resumed_from}", VIEWER_TOKEN) as ws:
        assert [m["id"] for m in _read_all(ws)] == [m["id"] for m in first[created + 1 :]]


def test_handshakes_are_refused_without_a_credential_for_an_unknown_job_or_query(
    server: Server,
) -> None:
    status, body = _refused(server, "/admin/jobs/ws")
    assert status == 401
    assert json.loads(body)["error"]["code"] == "unauthorized"
    assert _refused(server, "/admin/jobs/ws", token="not-a-token-we-know-0123")[0] == 401
    status, body = _refused(server, "/admin/jobs/nope/ws", token=server.token)
    assert status == 404
    assert json.loads(body)["error"]["code"] == "not_found"
    status, body = _refused(server, "/admin/jobs/ws?lastEventld=1", token=server.token)
    assert status == 400
    assert json.loads(body)["error"]["field"] == "lastEventld"


def test_the_session_cookie_opens_a_socket_only_from_the_servers_own_origin(
    server: Server,
) -> None:
    login = server.client.post("/admin/session", json={"token": VIEWER_TOKEN})
    assert login.status_code == 200
    cookie = login.headers["set-cookie"].split(";")[0]
    with_cookie = {"additional_headers": {"Cookie": cookie}}
    status, body = _refused(server, "/admin/jobs/ws", **with_cookie)  # no Origin
    assert status == 403
    assert json.loads(body)["error"]["code"] == "csrf"
    forged = _refused(server, "/admin/jobs/ws", origin="https://evil.example", **with_cookie)
    assert forged[0] == 403
    with _socket(server, "/admin/jobs/ws", origin=server.url, **with_cookie) as ws:
        job_id = server.start_job({"type": "quick"})
        assert _read_until(ws, "finished", job_id)[-1]["data"]["status"] == "completed"


def test_a_subscriber_that_falls_behind_is_closed_with_1013(make_server: Any) -> None:
    # One batch per 5 s: the jobs started meanwhile queue past the bound of 3.
    server = make_server(JOBSUP_EVENTS_INTERVAL_S="5", JOBSUP_EVENTS_QUEUE="3")
    with _socket(server, "/admin/jobs/ws", server.token) as ws:
        first = server.start_job({"type": "quick"})
        assert json.loads(ws.recv(timeout=30))["data"]["id"] == first
        for _ in range(10):
            server.start_job({"type": "quick"})
        _read_all(ws)
        assert ws.close_code == 1013
        assert ws.close_reason.startswith("overflow")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_client_that_does_not_read_is_dropped_and_costs_the_server_little(
    make_server: Any,
) -> None:
    server = make_server(JOBSUP_EVENTS_KEEPALIVE_S="1", JOBSUP_EVENTS_INTERVAL_S="0")
    before = _rss_kib(server.pid)
    # 1,000 partial results of 60 KB: 60 MB for a client that reads none of it.
    job_id = server.start_job({"type": "chatty", "count": 1000, "partialBytes": 60_000})
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    path = f"/admin/jobs/{job_id}/ws"
    options = {"sock": sock, "max_queue": 1, "max_size": None, "close_timeout": 1}
    with _socket(server, path, server.token, **options):
        wait_until(lambda: "dropped a WebSocket client" in server.log(), timeout=60)
        assert server.client.get("/healthz").status_code == 200  # the API never waited
        server.wait_status(job_id, "completed", timeout=60)
        # Far less than what was published (the ring buffer alone keeps up to 8 MiB).
        assert _rss_kib(server.pid) - before < 30_000
        # (What the buffers still hold trickles through a 4 KiB window: not read here.)


def test_open_sockets_end_at_a_shutdown_without_holding_it_up(server: Server) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(job_id, "running")
    with (
        _socket(server, "/admin/jobs/ws", server.token) as every,
        _socket(server, f"/admin/jobs/{job_id}/ws", server.token) as one,
    ):
        assert json.loads(one.recv(timeout=30))["event"] == "snapshot"
        assert server.stop() == 0
        for ws in (every, one):
            _read_all(ws)
            # Ours (1001) as a rule; uvicorn's own (1012) if its shutdown came first.
            assert ws.close_code in (1001, 1012)
