"""A fake Evolution API v2 server: a real HTTP server on a local port, for process-level tests.

It speaks the endpoints the removal jobs use, with the shapes Evolution
really sends (the project's reference notes on Evolution API v2):

- ``GET /instance/connectionState/{instance}``: ``{"instance": {"instanceName", "state"}}``.
- ``GET /group/participants/{instance}?groupJid=``: ``{"participants": [...]}``, ids as
  phone ids or LIDs with the other form beside them; 404 ``["No participants",
  "Error: item-not-found"]`` for an unknown group.
- ``POST /group/updateParticipant/{instance}?groupJid=``: 201 with one
  ``{"status", "jid", "content"}`` per participant ("200" removed, "404" not in the group).
- Unknown instance: 404 before the key is checked; a wrong ``apikey``: 401 with a plain
  string message.

Tests steer it in process (it runs in a thread of the test): ``fail_next``
queues error answers (429 with Retry-After, 500, rate-overlimit, slow ones),
``codes`` forces a participant's code, ``hold_removals`` makes a removal
wait (after it took effect) until ``release``. Every call is recorded, so a
test can assert that a dry run made no mutating call.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supervisor.testing import wait_until

KEY = "fake-evolution-key-0123456789"
INSTANCE = "jobsup-test"


@dataclass
class Fault:
    """One scripted answer: an error status (0: answer normally) after ``delay_s``."""

    status: int = 0
    message: Any = None
    retry_after: float | None = None
    delay_s: float = 0.0


@dataclass
class Call:
    method: str
    route: str  # "state", "participants", "update"
    group: str | None
    body: Any
    at: float = field(default_factory=time.time)  # when it arrived (epoch s)


@dataclass
class FakeEvolution:
    """The fake's state: instance, groups, scripted faults and the calls received."""

    key: str = KEY
    instance: str = INSTANCE
    state: str = "open"
    groups: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    codes: dict[str, str] = field(default_factory=dict)  # participant id -> forced code
    calls: list[Call] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # every removal that took effect
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    hold_removals: bool = False
    holding: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # --- steering, from the test ----------------------------------------------

    def add_group(self, group: str, participants: list[dict[str, Any]]) -> None:
        with self.lock:
            self.groups[group] = {p["id"]: dict(p) for p in participants}

    def fail_next(self, route: str, *faults: Fault) -> None:
        with self.lock:
            self.faults.setdefault(route, []).extend(faults)

    def members(self, group: str) -> list[str]:
        with self.lock:
            return sorted(self.groups[group])

    def calls_to(self, route: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.route == route]

    # --- the HTTP side ----------------------------------------------------------

    def _guard(self, request: Request, route: str, body: Any = None) -> Response | None:
        """Evolution's guard order: instance exists, then the key; then scripted faults."""
        group = request.query_params.get("groupJid")
        with self.lock:
            self.calls.append(Call(request.method, route, group, body))
        if request.path_params["instance"] != self.instance:
            name = request.path_params["instance"]
            return _error(404, [f'The "{name}" instance does not exist'])
        if request.headers.get("apikey") != self.key:
            return _error(401, "Unauthorized")
        with self.lock:
            queue = self.faults.get(route, [])
            fault = queue.pop(0) if queue else None
        if fault is None:
            return None
        time.sleep(fault.delay_s)  # the handlers are sync: Starlette runs them in threads
        if fault.status == 0:
            return None
        response = _error(fault.status, fault.message or ["fault"])
        if fault.retry_after is not None:
            response.headers["retry-after"] = f"{fault.retry_after:g}"
        return response

    def connection_state(self, request: Request) -> Response:
        refused = self._guard(request, "state")
        if refused is not None:
            return refused
        return JSONResponse({"instance": {"instanceName": self.instance, "state": self.state}})

    def participants(self, request: Request) -> Response:
        refused = self._guard(request, "participants")
        if refused is not None:
            return refused
        group = _group_jid(request.query_params.get("groupJid", ""))
        if not re.fullmatch(r"[\d-]+@g\.us", group):
            return _error(400, ["The group id needs to be informed in the query"])
        with self.lock:
            members = self.groups.get(group)
            listed = None if members is None else [dict(p) for p in members.values()]
        if listed is None:
            return _error(404, ["No participants", "Error: item-not-found"])
        return JSONResponse({"participants": listed})

    async def update_participant(self, request: Request) -> Response:
        body = await request.json()
        return await _in_thread(self._update, request, body)

    def _update(self, request: Request, body: Any) -> Response:
        refused = self._guard(request, "update", body)
        if refused is not None:
            return refused
        ids = body.get("participants") if isinstance(body, dict) else None
        if body.get("action") not in ("add", "remove", "promote", "demote"):
            return _error(400, [{"property": "instance", "message": "bad action"}])
        if not isinstance(ids, list) or not ids or len(set(ids)) != len(ids):
            return _error(400, [{"property": "participants", "message": "bad participants"}])
        group = _group_jid(request.query_params.get("groupJid", ""))
        with self.lock:
            members = self.groups.get(group)
            if members is None:
                return _error(400, ["Error updating participants", "Error: item-not-found"])
            answers = [self._remove_one(members, sent) for sent in ids]
        if self.hold_removals:  # taken effect; the answer waits
            self.holding.set()
            self.release.wait(60)
        return JSONResponse({"updateParticipants": answers}, status_code=201)

    def _remove_one(self, members: dict[str, dict[str, Any]], sent: str) -> dict[str, Any]:
        wanted = sent.split(":")[0] if "@" not in sent else re.sub(r":\d+@", "@", sent)
        found = next(
            (
                p
                for p in members.values()
                if wanted in (p["id"], p.get("phoneNumber"), p.get("lid"))
            ),
            None,
        )
        if found is None:
            attrs = {"jid": sent, "error": "404"}
            return {"status": "404", "jid": sent, "content": {"tag": "participant", "attrs": attrs}}
        code = self.codes.get(found["id"], "200")
        attrs = {"jid": found["id"]}
        if found.get("phoneNumber"):
            attrs["phone_number"] = found["phoneNumber"]
        if code == "200":
            del members[found["id"]]
            self.removed.append(found["id"])
        else:
            attrs["error"] = code
        return {
            "status": code,
            "jid": found["id"],
            "content": {"tag": "participant", "attrs": attrs},
        }

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/instance/connectionState/{instance}", self.connection_state),
                Route("/group/participants/{instance}", self.participants),
                Route(
                    "/group/updateParticipant/{instance}",
                    self.update_participant,
                    methods=["POST"],
                ),
            ]
        )


def _ids(participant: dict[str, Any]) -> tuple[Any, ...]:
    return participant["id"], participant.get("phoneNumber"), participant.get("lid")


def _group_jid(raw: str) -> str:
    return raw if raw.endswith("@g.us") else f"{raw}@g.us"


def _error(status: int, message: Any) -> JSONResponse:
    names = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    return JSONResponse(
        {
            "status": status,
            "error": names.get(status, "Internal Server Error"),
            "response": {"message": message},
        },
        status_code=status,
    )


async def _in_thread(function: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)


@contextmanager
def running(fake: FakeEvolution) -> Iterator[str]:
    """Serve ``fake`` on a free local port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app(), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        fake.release.set()
        server.should_exit = True
        thread.join(10)
        sock.close()
