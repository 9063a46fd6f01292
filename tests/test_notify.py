"""Notifications through the outbox, to a real local receiver, with real servers.

The receiver is a small HTTP server on a thread: it answers a given list of
statuses first (500, 500: it fails twice), then 200, and keeps each request
it got. Every notification must arrive signed, be recorded in the outbox,
survive a restart of jobsup, and be sent once by two PostgreSQL instances.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from supervisor.job import Job, Progress, now
from supervisor.notify import (
    BACKOFF_BASE_S,
    BACKOFF_CAP_S,
    Notices,
    backoff_s,
    event_of,
    sign,
)
from supervisor.state import TERMINAL, JobStatus
from supervisor.store import Store, claims, outbox
from supervisor.store.jobs import insert_job
from tests.conftest import FAST, ROOT, Server, free_port, wait_until
from workers.db import connect

SECRET = "receiver-secret-0123456789"
FINAL = ("completed", "failed", "cancelled")


class Receiver:
    """An HTTP receiver on a thread: ``fail_first`` statuses, then 200 to every POST."""

    def __init__(self, port: int | None = None, fail_first: tuple[int, ...] = ()) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._answers = list(fail_first)
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._lock:
                    receiver.requests.append((dict(self.headers.items()), body))
                    status = receiver._answers.pop(0) if receiver._answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def accepted(self) -> list[tuple[dict[str, str], bytes]]:
        """The requests answered 200 (every one after the failures)."""
        with self._lock:
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=(500, 500))
    yield r
    r.close()


def _env(*urls: str) -> dict[str, str]:
    return {
        "JOBSUP_NOTIFY_URLS": ",".join(urls),
        "JOBSUP_NOTIFY_SECRET": SECRET,
        "JOBSUP_POLL_S": "0.2",
    }


def _verify(headers: dict[str, str], body: bytes) -> None:
    """What a receiver does: the signature over "<timestamp>." + body, by the shared secret."""
    timestamp = int(headers["X-Jobsup-Timestamp"])
    expected = (
        "sha256="
        + hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    )
    assert hmac.compare_digest(headers["X-Jobsup-Signature"], expected)
    assert sign(SECRET, timestamp, body) == expected


def _outbox(server: Server, **query: str) -> list[dict[str, Any]]:
    response = server.client.get("/admin/notifications", params=query)
    assert response.status_code == 200, response.text
    return list(response.json())


def test_a_receiver_failing_twice_gets_the_finished_job_once_signed(
    make_server: Any, receiver: Receiver
) -> None:
    server = make_server(**_env(receiver.url))
    job_id = server.start_job({"type": "quick", "value": 7})
    server.wait_status(job_id, "completed")

    delivered = wait_until(lambda: _outbox(server, state="delivered"), timeout=30)
    assert [(d["jobId"], d["attempts"], d["lastStatus"]) for d in delivered] == [(job_id, 3, 200)]
    assert _outbox(server, state="pending") == []

    requests = receiver.accepted()
    assert len(requests) == 3  # two failures, then the one delivery
    headers, body = requests[-1]
    _verify(headers, body)
    sent = json.loads(body)
    assert sent["event"] == "job.finished"
    assert sent["job"]["id"] == job_id
    assert sent["job"]["status"] == "completed"
    assert sent["job"]["result"] == {"value": 7}
    # Every attempt carries the same delivery id, so receivers can dedupe.
    assert {h["X-Jobsup-Delivery"] for h, _ in requests} == {delivered[0]["delivery"]}
    assert [h["X-Jobsup-Attempt"] for h, _ in requests] == ["1", "2", "3"]
    assert "jobsup_notification_attempts_total" in server.client.get("/metrics").text


def test_the_outbox_answers_by_state_and_job_and_pages(
    make_server: Any, receiver: Receiver
) -> None:
    server = make_server(**_env(receiver.url, receiver.url + "?second"))
    jobs = [server.start_job({"type": "quick", "value": i}) for i in range(2)]
    for job_id in jobs:
        server.wait_status(job_id, "completed")
    wait_until(lambda: len(_outbox(server, state="delivered")) == 4, timeout=30)
    assert {d["jobId"] for d in _outbox(server, jobId=jobs[0])} == {jobs[0]}
    first = server.client.get("/admin/notifications", params={"limit": "3"})
    assert len(first.json()) == 3
    rest = server.client.get(
        "/admin/notifications", params={"limit": "3", "before": first.headers["X-Next-Before"]}
    )
    assert len(rest.json()) == 1
    assert "X-Next-Before" not in rest.headers
    bad = server.client.get("/admin/notifications", params={"state": "lost"})
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "state"


def test_a_notification_waiting_at_a_stop_is_delivered_by_the_restarted_server(
    make_server: Any,
) -> None:
    port = free_port()  # the receiver is down: nothing listens here yet
    url = f"http://127.0.0.1:{port}/hook"
    first = make_server(**_env(url))
    job_id = first.start_job({"type": "quick"})
    first.wait_status(job_id, "completed")
    # An attempt counts from its claim; its failure is recorded once it is over.
    failed_once = wait_until(lambda: [d for d in _outbox(first) if d["lastError"]])
    assert failed_once[0]["state"] == "pending"
    assert first.stop() == 0

    receiver = Receiver(port=port)
    try:
        second = make_server(**_env(url))
        wait_until(lambda: _outbox(second, state="delivered"), timeout=30)
        requests = receiver.accepted()
        assert len(requests) == 1
        _verify(*requests[0])
        assert json.loads(requests[0][1])["job"]["id"] == job_id
        assert _outbox(second, state="pending") == []
    finally:
        receiver.close()


def test_a_cancelled_pending_job_is_notified_too(make_server: Any, receiver: Receiver) -> None:
    server = make_server(JOBSUP_MAX_CONCURRENT_JOBS="1", **_env(receiver.url))
    busy = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 30_000})
    server.wait_status(busy, "running")
    waiting = server.start_job({"type": "quick"})
    assert server.client.post(f"/admin/jobs/{waiting}/cancel").status_code in (200, 202)
    server.wait_status(waiting, "cancelled")
    delivered = wait_until(lambda: _outbox(server, state="delivered", jobId=waiting), timeout=30)
    assert len(delivered) == 1


def _told(receiver: Receiver, job_id: str, event: str) -> dict[str, Any] | None:
    """The job as the receiver was told it with ``event`` (checked signed), if it was."""
    for headers, body in receiver.accepted():
        sent = json.loads(body)
        if sent["job"]["id"] == job_id and sent["event"] == event:
            _verify(headers, body)
            assert headers["X-Jobsup-Event"] == event
            return dict(sent["job"])
    return None


def test_a_chain_cancelled_by_its_failed_parent_is_notified(make_server: Any) -> None:
    receiver = Receiver()
    try:
        server = make_server(**_env(receiver.url))
        started = server.client.post(
            "/admin/chains",
            json={"steps": [{"type": "crash", "how": "exception"}, {"type": "quick"}]},
        )
        assert started.status_code == 202, started.text
        parent, follower = started.json()["jobIds"]
        told = wait_until(lambda: _told(receiver, follower, "job.finished"), timeout=30)
        assert told["status"] == "cancelled"
        assert told["cancel"]["reason"] == "dependency"
        assert wait_until(lambda: _told(receiver, parent, "job.finished"), timeout=30)
    finally:
        receiver.close()


def test_approval_steps_notify_that_they_await_and_their_rejection(make_server: Any) -> None:
    receiver = Receiver()
    try:
        server = make_server(**_env(receiver.url))
        # An approval step released by its parent's end, in the store.
        started = server.client.post(
            "/admin/chains",
            json={"steps": [{"type": "quick"}, {"type": "quick", "approval": True}]},
        )
        assert started.status_code == 202, started.text
        step = started.json()["jobIds"][1]
        told = wait_until(lambda: _told(receiver, step, "job.awaiting_approval"), timeout=30)
        assert told["status"] == "awaiting_approval"
        # One that awaits approval from its start; then rejected.
        first = server.start_job({"type": "quick", "approval": True})
        told = wait_until(lambda: _told(receiver, first, "job.awaiting_approval"), timeout=30)
        assert told["status"] == "awaiting_approval"
        assert server.client.post(f"/admin/jobs/{first}/reject").status_code == 200
        told = wait_until(lambda: _told(receiver, first, "job.finished"), timeout=30)
        assert (told["status"], told["cancel"]["reason"]) == ("cancelled", "rejected")
        assert _told(receiver, step, "job.finished") is None  # still awaiting
    finally:
        receiver.close()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JOBSUP_NOTIFY_URLS": "ftp://example.com/x", "JOBSUP_NOTIFY_SECRET": SECRET}, "ftp:"),
        (
            {"JOBSUP_NOTIFY_URLS": "http://ok.example,nohost", "JOBSUP_NOTIFY_SECRET": SECRET},
            "nohost",
        ),
        ({"JOBSUP_NOTIFY_URLS": "http://example.com/x"}, "JOBSUP_NOTIFY_SECRET"),
    ],
)
def test_bad_notification_settings_stop_the_start_with_one_line(
    env: dict[str, str], named: str, tmp_path: Any
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "supervisor", "serve"],
        cwd=ROOT,
        env={
            **FAST,
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'j.db'}",
            "PORT": str(free_port()),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.postgres
def test_two_instances_send_each_notification_once(pg_url: str, make_server: Any) -> None:
    receiver = Receiver()
    try:
        cluster = {
            "DATABASE_URL": pg_url,
            "JOBSUP_HEARTBEAT_S": "0.3",
            "JOBSUP_NODE_TIMEOUT_S": "2",
        }
        servers = [make_server(**cluster, **_env(receiver.url)) for _ in range(2)]
        jobs = [servers[i % 2].start_job({"type": "quick", "value": i}) for i in range(20)]
        for i, job_id in enumerate(jobs):
            servers[i % 2].wait_status(job_id, *FINAL, timeout=30)
        wait_until(
            lambda: len(_outbox(servers[0], state="delivered", limit="100")) == 20, timeout=30
        )
        sent = Counter(json.loads(body)["job"]["id"] for _, body in receiver.accepted())
        assert sent == Counter({job_id: 1 for job_id in jobs})
    finally:
        receiver.close()


def test_the_signature_is_hmac_sha256_over_the_timestamp_a_dot_and_the_body() -> None:
    body = b'{"event":"job.finished"}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("k" * 16, 1_700_000_000, body) == f"sha256={expected}"


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    for attempt in range(1, 40):
        ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (attempt - 1))
        assert ceiling / 2 <= backoff_s(attempt) <= ceiling


def test_only_final_states_and_approvals_are_notified() -> None:
    notified = {s for s in JobStatus if event_of(s) is not None}
    assert notified == {*TERMINAL, JobStatus.AWAITING_APPROVAL}
    assert event_of(JobStatus.AWAITING_APPROVAL) == "job.awaiting_approval"
    job = Job("j", "quick", JobStatus.COMPLETED, msgspec.Raw(b"{}"), Progress(), now(), {"v": 1})
    assert Notices((), 60).notice(job) is None  # no URL
    notice = Notices(("http://a/", "http://b/"), 60).notice(job)
    assert notice is not None
    assert (notice.event, notice.urls, notice.retry_ms) == (
        "job.finished",
        ("http://a/", "http://b/"),
        60_000,
    )
    sent = json.loads(notice.body)
    assert (sent["event"], sent["job"]["id"], sent["job"]["result"]) == (
        "job.finished",
        "j",
        {"v": 1},
    )
    job.status = JobStatus.RUNNING
    assert Notices(("http://a/",), 60).notice(job) is None


def test_a_claimed_row_is_leased_to_one_sender_then_failed_past_its_give_up_time(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    Store(url).migrate()
    db = connect(url)
    try:
        outbox.enqueue(db, outbox.Notice("j1", "job.finished", b"{}", ("http://a/",), 10_000), 0)
        [row] = outbox.claim(db, 0, lease_ms=5_000, limit=10)
        assert row.attempts == 1
        assert outbox.claim(db, 4_999, lease_ms=5_000, limit=10) == []  # leased
        assert outbox.next_due(db) == 5_000
        # The lease ran out (its sender died): another takes it, as attempt 2.
        [again] = outbox.claim(db, 5_000, lease_ms=5_000, limit=10)
        assert again.attempts == 2
        # The first attempt's late outcome no longer counts.
        assert outbox.retry(db, row.id, 1, 500, "HTTP 500", 6_000, 5_500) == "pending"
        assert outbox.list_rows(db, outbox.OutboxFilter())[0].last_error is None
        assert outbox.retry(db, row.id, 2, None, "refused", 10_000, 5_500) == "failed"
        [failed] = outbox.list_rows(db, outbox.OutboxFilter(state="failed"))
        assert (failed.last_error, failed.ended_at) == ("refused", 5_500)
        assert outbox.prune(db, 5_501) == 1
    finally:
        db.close()


def test_a_pending_job_a_claim_cancels_is_notified_in_the_claims_transaction(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'claim.db'}"
    Store(url).migrate()
    db = connect(url)
    try:
        job = Job("j", "quick", JobStatus.PENDING, msgspec.Raw(b"{}"), Progress(), now())
        insert_job(db, job, None, None, 1_000, 100)
        # Asked to cancel while no instance held it (its owner stalled, say).
        request = {"requestedAt": now().isoformat(), "reason": "user", "requestedBy": None}
        assert claims.request_cancel(db, "j", request, 1_500)
        notices = Notices(("http://a/",), 60)
        assert claims.claim_jobs(db, "me", 4, 2_000, notices.notice) == []
        [row] = outbox.list_rows(db, outbox.OutboxFilter())
        sent = json.loads(row.body)
        assert (row.job_id, row.event, sent["job"]["status"]) == ("j", "job.finished", "cancelled")
    finally:
        db.close()
