"""Limits from outside: start and cancel rates, failed authentications, body sizes, leaks."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

from tests.conftest import ADMIN_TOKEN, OPERATOR_TOKEN, RAW_AUTH, VIEWER_TOKEN, Server
from tests.test_auth import GROUP, anonymous, bearer

LIMITED = {"JOBSUP_RATE_START_PER_MIN": "6", "JOBSUP_RATE_BURST": "3"}


def test_starts_and_cancels_are_limited_per_credential(make_server: Any) -> None:
    server = make_server(**LIMITED)
    with anonymous(server) as client:
        operator = bearer(OPERATOR_TOKEN)
        answers = [
            client.post("/admin/jobs/start", json={"type": "quick"}, headers=operator),
            client.post("/admin/jobs/nope/cancel", headers=operator),  # a cancel counts too
            client.post("/admin/jobs/start", json={"type": "nope"}, headers=operator),  # a 400 too
            client.post("/admin/jobs/start", json={"type": "quick"}, headers=operator),
        ]
        assert [a.status_code for a in answers] == [202, 404, 400, 429]
        limited = answers[-1]
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # Every attempt counts, refused ones too: trying again at once is refused again.
        again = client.post("/admin/jobs/nope/cancel", headers=operator)
        assert again.status_code == 429
        assert int(again.headers["retry-after"]) >= int(limited.headers["retry-after"])
        # Another credential has its own bucket; reads are not limited.
        admin = bearer(ADMIN_TOKEN)
        assert (
            client.post("/admin/jobs/start", json={"type": "quick"}, headers=admin).status_code
            == 202
        )
        for _ in range(10):
            assert client.get("/admin/jobs", headers=operator).status_code == 200
    refused = server.client.get("/admin/audit", params={"action": "job.start"}).json()
    assert [e["outcome"] for e in refused] == [202, 429, 400, 202]  # newest first


def test_the_limit_is_off_at_zero(make_server: Any) -> None:
    server = make_server(JOBSUP_RATE_START_PER_MIN="0", JOBSUP_RATE_BURST="1")
    for _ in range(8):
        assert server.client.post("/admin/jobs/nope/cancel").status_code == 404


def test_failed_authentications_are_limited_per_peer(make_server: Any) -> None:
    server = make_server(**LIMITED)
    with anonymous(server) as client:
        wrong = bearer("wrong-token-0123456789")
        statuses = [client.get("/admin/jobs", headers=wrong).status_code for _ in range(3)]
        assert statuses == [401] * 3
        limited = client.get("/admin/jobs", headers=wrong)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert client.get("/admin/jobs").status_code == 429  # no credential: a failure too
        login = client.post("/admin/session", json={"token": "wrong-token-0123456789"})
        assert login.status_code == 429
        assert "retry-after" in login.headers
        # A good token from the same address still works.
        assert client.get("/admin/jobs", headers=bearer(VIEWER_TOKEN)).status_code == 200
    # Past the limit the failures are not recorded: an attacker cannot flood the trail.
    failed = server.client.get("/admin/audit", params={"action": "auth.failed"}).json()
    assert len(failed) == 3


def _chunks(total: int, size: int = 1024) -> Iterator[bytes]:
    yield b'{"name": "g", "members": [], "pad": "'
    sent = 0
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}'


def test_every_body_is_bounded(make_server: Any) -> None:
    server = make_server(JOBSUP_MAX_BODY_BYTES="2000")
    members = [{"whatsappId": f"{i:012d}@s.whatsapp.net"} for i in range(60)]
    big = {"name": "g", "members": members}
    assert len(json.dumps(big)) > 2000
    for method, path in (("PUT", "/admin/groups/g"), ("POST", "/admin/jobs/start")):
        refused = server.client.request(method, path, json=big)
        assert refused.status_code == 413, (path, refused.text)
        assert refused.json()["error"]["code"] == "body_too_large"
        # Chunked, without a length: refused all the same.
        chunked = server.client.request(
            method, path, content=_chunks(10_000), headers={"content-type": "application/json"}
        )
        assert chunked.status_code == 413, path
    assert server.client.put("/admin/groups/g", json=GROUP).status_code == 200
    assert server.client.get("/admin/groups/g").json()["memberCount"] == 0


def test_a_chunked_body_is_refused_before_it_is_all_sent(make_server: Any) -> None:
    """413 after the limit's worth of chunks; the rest never has to arrive."""
    server = make_server(JOBSUP_MAX_BODY_BYTES="4096")
    head = (
        b"PUT /admin/groups/g HTTP/1.1\r\n"
        + RAW_AUTH
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 1024
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        for _ in range(8):  # 8 KiB, and no final chunk
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = b""
        while b"body_too_large" not in answer and (received := sock.recv(65536)):
            answer += received
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"body_too_large" in answer


def test_a_start_is_bounded_at_64_kib_even_when_bodies_may_be_larger(server: Server) -> None:
    padding = "k" * (64 * 1024)
    refused = server.client.post("/admin/jobs/start", json={"type": "sleepy", "key": padding})
    assert refused.status_code == 413
    assert server.client.put("/admin/groups/g", json={**GROUP, "name": padding}).status_code != 413


def test_no_answer_carries_a_trace_a_path_sql_or_a_token(server: Server) -> None:
    wrong = "wrong-token-0123456789abcdef"
    answers = []
    with anonymous(server) as client:
        answers += [
            client.get("/admin/jobs", headers=bearer(wrong)),
            client.post("/admin/session", json={"token": wrong}),
            client.post("/admin/session", json={"token": 7}),
            client.post(
                "/admin/session", content=b"{", headers={"content-type": "application/json"}
            ),
            client.get("/admin/jobs", headers={"cookie": f"jobsup_session={wrong}"}),
            client.get("/admin/jobs", headers=bearer(VIEWER_TOKEN), params={"before": "x' OR 1=1"}),
            client.put("/admin/groups/g", json=GROUP, headers=bearer(OPERATOR_TOKEN)),
        ]
    answers += [
        server.client.get("/admin/audit", params={"before": "'; DROP TABLE audit; --"}),
        server.client.get("/admin/audit", params={"since": "not a time"}),
        server.client.post("/admin/jobs/start", json={"type": "quick", "value": "x" * 100}),
    ]
    for answer in answers:
        text = answer.text
        for leak in (wrong, ADMIN_TOKEN, OPERATOR_TOKEN, VIEWER_TOKEN, "Traceback", ".py"):
            assert leak not in text, (answer.request.url, text)
        for leak in ("SELECT", "sqlite", "/work/", "/tmp/"):
            assert leak not in text, (answer.request.url, text)
