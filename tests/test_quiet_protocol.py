"""What a client sends wrong at the HTTP level: answered with the envelope, logged quietly."""

from __future__ import annotations

import socket
from typing import Any

import msgspec

from tests.conftest import RAW_AUTH, Server

WEBSOCKET = (
    b"GET {path} HTTP/1.1\r\n" + RAW_AUTH + b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
)
MALFORMED = [
    b"GET /healthz HTTP/9.9\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"POST /admin/jobs/start HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
]


def _exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send one request; read one whole answer. Status, headers, body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := sock.recv(65536)):
            answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers.get("content-length", 0)) and (chunk := sock.recv(65536)):
            body += chunk
    return int(lines[0].split(" ")[1]), headers, body


def test_a_websocket_upgrade_where_none_is_served_gets_404_in_the_envelope(
    server: Server,
) -> None:
    for path in (b"/healthz", b"/admin/jobs/x/status"):
        status, headers, body = _exchange(
            server, WEBSOCKET.replace(b"{path}", path).replace(b"{extra}", b"")
        )
        assert status == 404
        assert headers["x-content-type-options"] == "nosniff"
        assert msgspec.json.decode(body)["error"]["code"] == "not_found"
    # Any other upgrade is ignored: the request is served as plain HTTP.
    status, _, body = _exchange(
        server,
        b"GET /healthz HTTP/1.1\r\n" + RAW_AUTH + b"Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
    )
    assert status == 200
    assert msgspec.json.decode(body)["status"] == "ok"
    assert "WARNING" not in server.log()


def test_malformed_http_gets_the_envelope_and_no_log_line(server: Server) -> None:
    for request in MALFORMED:
        status, _headers, body = _exchange(server, request)
        assert status == 400, request
        error: dict[str, Any] = msgspec.json.decode(body)["error"]
        assert error["code"] == "bad_request"
    assert server.client.get("/healthz").status_code == 200
    log = server.log()
    assert "WARNING" not in log, log
    assert "Unsupported upgrade" not in log, log


def test_a_body_announced_too_large_is_refused_before_it_arrives(server: Server) -> None:
    """413 at once, not a wait for a body the server would refuse anyway."""
    head = (
        b"POST /admin/jobs/start HTTP/1.1\r\n" + RAW_AUTH + b"Content-Type: application/json\r\n"
        b"Content-Length: 8388609\r\n\r\n{"
    )
    status, _headers, body = _exchange(server, head)  # the socket gives up after 10 s
    assert status == 413
    assert msgspec.json.decode(body)["error"]["code"] == "body_too_large"
    within = server.client.post(
        "/admin/jobs/start",
        content=b'{"type": "quick"}',
        headers={"content-type": "application/json", "content-length": "17"},
    )
    assert within.status_code == 202, within.text
