"""One HTTP connection: uvicorn's httptools protocol, with the bounds it lacks.

uvicorn closes a connection that stays idle between requests
(``timeout_keep_alive``), but not one that never finishes its request line
and headers, and it counts connections only to answer 503 in plain text.
A connection here:

- must deliver its headers within ``header_timeout_s`` of being opened (or
  of the first byte of its next request): otherwise it gets 408 and is
  closed;
- must deliver its body within ``body_timeout_s`` of its headers. A route
  reading the body answers 408 at that deadline (the edge middleware's
  ``receive``); a body still arriving after its answer (a route that did
  not read it) gets the connection closed;
- beyond ``max_connections`` open connections gets a 503 for its request,
  and is closed; beyond ``fd_cap`` it is closed at once, unread, so that
  the descriptors a job's child needs (pipes, pidfd) are always there;
- whose request line and headers exceed ``MAX_HEAD_BYTES`` gets 431 and is
  closed (uvicorn's httptools protocol keeps every header it is sent);
- that sends malformed HTTP gets the API's JSON error envelope, and its
  refusal is logged at DEBUG only: a client's mistake is not the server's
  warning, and one line per bad request would let any client flood the log.

A WebSocket upgrade (the event stream's routes) hands the connection to
uvicorn's WebSocket protocol, and this one's timers are disarmed: the
deadlines above are for HTTP requests. Any other ``Upgrade`` is ignored, as
HTTP lets a server do: the request is answered as the plain HTTP request it
also is, through the edge like any other.
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass
from typing import Any

import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from supervisor.api.errors import SECURITY_HEADERS, ErrorBody, ErrorEnvelope

log = logging.getLogger("jobsup.http")

MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True)
class Limits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int  # past it, 503
    fd_cap: int  # past it, closed unanswered: the rest of the descriptors are for jobs


def raw_response(status: int, code: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer with the error envelope, closing the connection."""
    body = msgspec.json.encode(ErrorEnvelope(ErrorBody(code, message)))
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode()]
    head += [b"content-type: application/json", b"content-length: %d" % len(body)]
    head += [name + b": " + value for name, value in SECURITY_HEADERS]
    head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    body = msgspec.json.encode(
        ErrorEnvelope(ErrorBody("too_many_connections", "too many open connections; retry"))
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
        *SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _RefusalLog:
    """uvicorn's protocol logger, with its warnings (all about what a client
    sent: malformed HTTP, an upgrade) lowered to DEBUG. Errors pass as they are."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger, name)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.debug(msg, *args, **kwargs)


class Connection(HttpToolsProtocol):
    limits: Limits  # set by protocol_for

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = _RefusalLog(self.logger)  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._close_after_response = False
        self._in_head = True  # the request line and headers are not all in yet
        self._head_bytes = 0
        self._shed = len(self.connections) >= self.limits.fd_cap
        if self._shed:
            transport.abort()  # no answer: writing one may take the last descriptors' time
            return
        if len(self.connections) >= self.limits.max_connections:
            self.app = _over_capacity
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._shed:
            return
        self._disarm_header_timer()
        self._disarm_body_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # A chunk that leaves the headers still incomplete is all head
        # (httptools buffers a header until it ends, with no limit).
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                message = f"request line and headers over {MAX_HEAD_BYTES} bytes"
                self.transport.write(raw_response(431, "headers_too_large", message))
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_header_timer()
        super().on_headers_complete()
        self._body_timer = self.loop.call_later(self.limits.body_timeout_s, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm_body_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._close_after_response and not self.transport.is_closing():
            self.transport.close()

    def handle_websocket_upgrade(self) -> None:
        # The connection is the WebSocket protocol's from here: no HTTP deadline applies.
        self._disarm_header_timer()
        self._disarm_body_timer()
        super().handle_websocket_upgrade()

    def _unsupported_upgrade_warning(self) -> None:
        pass  # the Upgrade header is ignored; the request is served as plain HTTP

    def send_400_response(self, msg: str) -> None:
        self.transport.write(raw_response(400, "bad_request", f"malformed HTTP request: {msg}"))
        self.transport.close()

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(
            self.limits.header_timeout_s, self._headers_too_slow
        )

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _disarm_body_timer(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _body_too_slow(self) -> None:
        """The body is late: close once the answer is out (the route may still be working)."""
        self._body_timer = None
        if self.cycle is not None and self.cycle.response_complete:
            self.transport.close()
        else:
            self._close_after_response = True

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        log.info("closing a connection that sent no complete request headers in time")
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier (pipelined) request is still being answered: no
            # bytes of ours in the middle of its answer; close after it.
            self._close_after_response = True
            return
        self.transport.write(
            raw_response(408, "request_timeout", "the request headers did not arrive in time")
        )
        self.transport.close()


def protocol_for(limits: Limits) -> type[Connection]:
    """The protocol class uvicorn instantiates per connection, with these limits."""
    return type("JobsupConnection", (Connection,), {"limits": limits})
