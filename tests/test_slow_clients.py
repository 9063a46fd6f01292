"""Slow and many clients, over real sockets against a real server with a low file limit."""

from __future__ import annotations

import contextlib
import select
import socket
import sys
from typing import Any

import httpx
import msgspec

from tests.conftest import RAW_AUTH, Server, wait_until

FILE_LIMIT = 256  # with one job slot, leaves 256 - 64 - 8 * (1 + 1) = 176 for connections


def _connect(server: Server, first: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    if first:
        sock.sendall(first)
    return sock


class Watch:
    """Sockets, and what the server wrote on each before closing it."""

    def __init__(self, socks: list[socket.socket]) -> None:
        self.socks = socks
        self.answers: dict[int, bytes] = {}

    def closed(self) -> bool:
        """Read what is there; true once the server has closed every socket."""
        for i, sock in enumerate(self.socks):
            if i in self.answers or not select.select([sock], [], [], 0)[0]:
                continue
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            if chunk:
                self.answers[-1 - i] = self.answers.get(-1 - i, b"") + chunk
            else:
                self.answers[i] = self.answers.pop(-1 - i, b"")
        return all(i in self.answers for i in range(len(self.socks)))

    def statuses(self) -> list[int | None]:
        return [_status(self.answers[i]) for i in range(len(self.socks))]

    def close(self) -> None:
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()


def _status(answer: bytes) -> int | None:
    return int(answer.split(b" ", 2)[1]) if answer else None


def test_slow_clients_are_closed_and_jobs_still_start(make_server: Any) -> None:
    server: Server = make_server(
        command=[
            "prlimit",
            f"--nofile={FILE_LIMIT}:{FILE_LIMIT}",
            sys.executable,
            "-m",
            "supervisor",
            "serve",
        ],
        JOBSUP_HEADER_TIMEOUT_S="2",
        JOBSUP_BODY_TIMEOUT_S="2",
        JOBSUP_MAX_CONNECTIONS="38",
        JOBSUP_MAX_CONCURRENT_JOBS="1",
    )
    # One job holds the only slot for half a second; the next waits for it,
    # and starts (forks, opens its pipes) while the connections below are open.
    first = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 500})
    queued = [server.start_job({"type": "quick", "value": i}) for i in range(3)]
    server.client.close()  # its keep-alive connection would count against the limit

    body_head = (
        b"POST /admin/jobs/start HTTP/1.1\r\n" + RAW_AUTH + b"content-type: application/json\r\n"
        b"content-length: 100\r\n\r\n{"
    )
    # Idle, half a request line, half the headers, half a body: none finishes.
    unread_body = (
        b"POST /admin/jobs/nope/cancel HTTP/1.1\r\n" + RAW_AUTH + b"content-length: 100\r\n\r\n{"
    )
    # (Idle ones last: whether or not they count past the limit, they get 408.)
    slow = Watch(
        [_connect(server, unread_body) for _ in range(3)]
        + [_connect(server, body_head) for _ in range(5)]
        + [_connect(server, b"GET /healthz HT") for _ in range(10)]
        + [_connect(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n") for _ in range(10)]
        + [_connect(server) for _ in range(10)]
    )
    over: list[Watch] = []
    try:
        # Past JOBSUP_MAX_CONNECTIONS, a request gets 503 in the error envelope.
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        over.append(Watch([_connect(server, request) for _ in range(10)]))
        wait_until(over[0].closed)
        assert over[0].statuses()[-5:] == [503] * 5
        body = over[0].answers[9].partition(b"\r\n\r\n")[2]
        assert msgspec.json.decode(body)["error"]["code"] == "too_many_connections"
        # Past the descriptors kept for jobs' pipes: closed at once, unanswered.
        over.append(Watch([_connect(server) for _ in range(200)]))
        tail = Watch(over[1].socks[-40:])
        wait_until(tail.closed)
        assert tail.statuses() == [None] * 40
        # Every slow client is closed at its deadline, with 408; a body the
        # route never read, after the route's own answer.
        wait_until(slow.closed)
        assert slow.statuses() == [404] * 3 + [408] * 35
        wait_until(over[1].closed)
    finally:
        for watch in [slow, *over]:
            watch.close()

    # The jobs accepted before, started meanwhile, all ran.
    server.client = client = httpx.Client(base_url=server.url, headers=server.headers, timeout=30)
    for job_id in [first, *queued]:
        assert server.wait_status(job_id, "completed", "failed")["status"] == "completed"
    # And a new start works once the slow clients are gone.
    assert server.wait_status(server.start_job({"type": "quick"}), "completed")
    assert client.get("/healthz").status_code == 200
    assert "Too many open files" not in server.log()
