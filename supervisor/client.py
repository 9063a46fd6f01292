"""Python clients of the jobsup HTTP API: ``Client`` (sync) and ``AsyncClient``.

Answers decode into the API's own msgspec structs (``supervisor.job.Job``,
the event stream's ``ProgressData`` and ``PartialData``). Every answer that
is not a success, and a server that cannot be reached, raises one exception
type, ``ClientError`` (``status`` None when there was no answer at all).

The server's address comes from ``url=``, else ``JOBSUP_URL``, else
``http://127.0.0.1:8000``; a token from ``token=``, else ``JOBSUP_TOKEN``
(sent as ``Authorization: Bearer``).

``events()`` iterates over the event stream and resumes by itself: when the
connection drops (or the server restarts, or the stream overflowed) it
reconnects with ``Last-Event-ID``, and gets what it missed or a fresh
snapshot. It gives up, with ``ClientError``, after ``reconnect_s`` seconds
without a connection. A one-job stream ends after its ``finished`` event.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

import httpx
import msgspec

from supervisor.events import PartialData, ProgressData
from supervisor.job import Job
from supervisor.store.job_logs import LogLine, LogPage

__all__ = [
    "AsyncClient",
    "CancelAnswer",
    "Client",
    "ClientError",
    "Event",
    "PartialData",
    "PauseAnswer",
    "ProgressData",
    "StartAnswer",
]

DEFAULT_URL = "http://127.0.0.1:8000"
T = TypeVar("T")

# Event kinds whose data is a job object.
_JOB_KINDS = frozenset(
    {
        "snapshot",
        "created",
        "started",
        "cancelling",
        "pausing",
        "paused",
        "resumed",
        "requeued",
        "finished",
    }
)
TERMINAL = frozenset({"completed", "cancelled", "failed"})


class ClientError(Exception):
    """An answer that is not a success, or no answer (``status`` None, code ``unreachable``)."""

    def __init__(
        self, status: int | None, code: str, message: str, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class StartAnswer(msgspec.Struct, rename="camel"):
    job_id: str
    status: str
    message: str
    run_at: str | None = None  # a delayed start (runAt, delayS): when it becomes claimable
    replayed: bool = False  # its idempotencyKey named a job already accepted: that one


class CancelAnswer(msgspec.Struct, rename="camel"):
    job_id: str
    status: str


class PauseAnswer(msgspec.Struct, rename="camel"):
    job_id: str
    status: str  # pausing, paused; running (or pending, paused across a restart) on resume


class Event(msgspec.Struct):
    """One event of a stream: ``data`` is a ``Job`` (snapshot, created, started,
    cancelling, finished), ``ProgressData``, ``PartialData``, or a dict (overflow)."""

    kind: str
    id: str | None
    data: Any


class _ErrorBody(msgspec.Struct):
    code: str = "error"
    message: str = ""
    field: str | None = None


class _ErrorEnvelope(msgspec.Struct):
    error: _ErrorBody


def _error(response: httpx.Response) -> ClientError:
    try:
        body = msgspec.json.decode(response.content, type=_ErrorEnvelope).error
        return ClientError(response.status_code, body.code, body.message, body.field)
    except (msgspec.DecodeError, msgspec.ValidationError):
        text = response.text.strip()[:200] or response.reason_phrase
        return ClientError(response.status_code, "http_error", f"{response.status_code}: {text}")


def _unreachable(url: str, exc: Exception) -> ClientError:
    return ClientError(None, "unreachable", f"cannot reach {url}: {exc}")


class _Retry(Exception):
    """An answer that says: try again shortly (503)."""

    def __init__(self, error: ClientError) -> None:
        super().__init__(error.message)
        self.error = error


def _given_up(url: str, exc: Exception) -> ClientError:
    return exc.error if isinstance(exc, _Retry) else _unreachable(url, exc)


def _decode(response: httpx.Response, type_: type[T]) -> T:
    if response.status_code >= 400:
        raise _error(response)
    try:
        return msgspec.json.decode(response.content, type=type_)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ClientError(response.status_code, "bad_answer", f"unexpected answer: {exc}") from None


def _event(kind: str, event_id: str | None, data: bytes) -> Event:
    if kind in _JOB_KINDS:
        value: Any = msgspec.json.decode(data, type=Job)
    elif kind == "progress":
        value = msgspec.json.decode(data, type=ProgressData)
    elif kind == "partial":
        value = msgspec.json.decode(data, type=PartialData)
    else:
        value = msgspec.json.decode(data)
    return Event(kind, event_id, value)


class _Parser:
    """Lines of text/event-stream in, ``Event``s (or None for a comment) out."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.kind = "message"
        self.id: str | None = None
        self.data: list[str] = []

    def line(self, line: str) -> Event | bool | None:
        """An ``Event`` at an event's end, None for a comment, False otherwise."""
        if line.startswith(":"):
            return None
        if line == "":
            if not self.data:
                self._reset()
                return False
            event = _event(self.kind, self.id, "\n".join(self.data).encode())
            self._reset()
            return event
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self.kind = value
        elif name == "id":
            self.id = value
        elif name == "data":
            self.data.append(value)
        return False


def _settings(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    url = (url or os.environ.get("JOBSUP_URL") or DEFAULT_URL).rstrip("/")
    token = token if token is not None else os.environ.get("JOBSUP_TOKEN")
    headers = {"accept": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return url, headers


def _list_params(
    status: str | None, type: str | None, limit: int | None, labels: dict[str, str]
) -> dict[str, Any]:
    params: dict[str, Any] = dict(labels)
    if status is not None:
        params["status"] = status
    if type is not None:
        params["type"] = type
    if limit is not None:
        params["limit"] = limit
    return params


def _events_path(job_id: str | None) -> str:
    return f"/admin/jobs/{job_id}/events" if job_id else "/admin/jobs/events"


class Client:
    """The sync client. Use it as a context manager, or call ``close()``."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        reconnect_s: float = 60.0,
    ) -> None:
        self.url, headers = _settings(url, token)
        self.reconnect_s = reconnect_s
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, type_: type[T], **kwargs: Any) -> T:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None
        return _decode(response, type_)

    def start(self, type: str, **config: Any) -> StartAnswer:
        """Start a job: ``start("removal_workflow", groupWaId="g", batchSize=5, ...)``."""
        return self._call("POST", "/admin/jobs/start", StartAnswer, json={"type": type, **config})

    def status(self, job_id: str) -> Job:
        return self._call("GET", f"/admin/jobs/{job_id}/status", Job)

    def list(
        self,
        status: str | None = None,
        type: str | None = None,
        limit: int | None = None,
        **labels: str,
    ) -> list[Job]:
        """Jobs newest first (without results); ``labels``: ``groupWaId="g"``."""
        params = _list_params(status, type, limit, labels)
        return self._call("GET", "/admin/jobs", list[Job], params=params)

    def logs(self, job_id: str, after: int = 0, limit: int | None = None) -> LogPage:
        """A page of the job's captured output: the lines numbered above ``after``."""
        params = {"after": after} if limit is None else {"after": after, "limit": limit}
        return self._call("GET", f"/admin/jobs/{job_id}/logs", LogPage, params=params)

    def follow_logs(self, job_id: str, poll_s: float = 1.0) -> Iterator[LogLine]:
        """Every line of the job's log, then new ones as they come, until the job has
        ended and its last lines are read (they are stored about once a second)."""
        after = 0
        ended_reads = 0
        while True:
            page = self.logs(job_id, after)
            yield from page.lines
            after = page.next_after
            if page.lines:
                continue
            if self.status(job_id).status in TERMINAL:
                ended_reads += 1
                if ended_reads > 2:  # its child's last lines are written after its end
                    return
            time.sleep(poll_s)

    def cancel(self, job_id: str) -> CancelAnswer:
        return self._call("POST", f"/admin/jobs/{job_id}/cancel", CancelAnswer)

    def approve(self, job_id: str) -> Job:
        """Approve a job awaiting approval: it becomes pending."""
        return self._call("POST", f"/admin/jobs/{job_id}/approve", Job)

    def reject(self, job_id: str) -> Job:
        """Reject a job awaiting approval: it ends cancelled, and the jobs after it."""
        return self._call("POST", f"/admin/jobs/{job_id}/reject", Job)

    def pause(self, job_id: str, freeze: bool = False) -> PauseAnswer:
        """Pause a running job (``freeze``: its whole process group, at once)."""
        body = {"mode": "freeze"} if freeze else None
        return self._call("POST", f"/admin/jobs/{job_id}/pause", PauseAnswer, json=body)

    def resume(self, job_id: str) -> PauseAnswer:
        return self._call("POST", f"/admin/jobs/{job_id}/resume", PauseAnswer)

    def put_group(self, group_wa_id: str, body: Any) -> dict[str, Any]:
        return self._call("PUT", f"/admin/groups/{group_wa_id}", dict[str, Any], json=body)

    def group(self, group_wa_id: str) -> dict[str, Any]:
        return self._call("GET", f"/admin/groups/{group_wa_id}", dict[str, Any])

    def put_schedule(self, name: str, body: Any) -> dict[str, Any]:
        """Create or replace a schedule: ``{"cron", "timezone", "job", "enabled", "catchUp"}``."""
        return self._call("PUT", f"/admin/schedules/{name}", dict[str, Any], json=body)

    def schedule(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/admin/schedules/{name}", dict[str, Any])

    def schedules(self, limit: int | None = None) -> list[dict[str, Any]]:
        params = {} if limit is None else {"limit": limit}
        return self._call("GET", "/admin/schedules", list[dict[str, Any]], params=params)

    def delete_schedule(self, name: str) -> None:
        try:
            response = self._http.request("DELETE", f"/admin/schedules/{name}")
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None
        if response.status_code >= 400:  # 204 has no body to decode
            raise _error(response)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Follow the job's events until it ends; its final state. TimeoutError past ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for event in self.events(job_id, _deadline=deadline):
            if event.kind == "finished":
                job: Job = event.data
                return job if job.result is not None else self.status(job_id)
        return self.status(job_id)

    def events(
        self,
        job_id: str | None = None,
        last_event_id: str | None = None,
        _deadline: float | None = None,
        **filters: str,
    ) -> Iterator[Event]:
        """The events of one job (ending after ``finished``), or of every job (never ending)."""
        path = _events_path(job_id)
        last = last_event_id
        failed_since: float | None = None
        delay = 0.2
        timeout = httpx.Timeout(self._http.timeout.connect, read=60.0)
        while True:
            headers = {"accept": "text/event-stream"}
            if last is not None:
                headers["last-event-id"] = last
            try:
                with self._http.stream(
                    "GET", path, params=filters, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code == 503:  # shutting down, too many connections
                        response.read()
                        raise _Retry(_error(response))
                    if response.status_code != 200:
                        response.read()
                        raise _error(response)
                    failed_since, delay = None, 0.2
                    parser = _Parser()
                    for line in response.iter_lines():
                        if _deadline is not None and time.monotonic() > _deadline:
                            raise TimeoutError(f"job {job_id} did not end in time")
                        event = parser.line(line)
                        if not event:
                            continue
                        if event.id is not None:
                            last = event.id
                        yield event
                        if job_id is not None and event.kind == "finished":
                            return
            except (httpx.TransportError, _Retry) as exc:
                now = time.monotonic()
                failed_since = failed_since or now
                if now - failed_since > self.reconnect_s:
                    raise _given_up(self.url, exc) from None
            if _deadline is not None and time.monotonic() > _deadline:
                raise TimeoutError(f"job {job_id} did not end in time")
            time.sleep(delay)  # the stream ended early (shutdown, overflow): resume
            delay = min(delay * 2, 5.0)


class AsyncClient:
    """The asyncio client, with the same calls as ``Client`` (awaited)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        reconnect_s: float = 60.0,
    ) -> None:
        self.url, headers = _settings(url, token)
        self.reconnect_s = reconnect_s
        self._http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, type_: type[T], **kwargs: Any) -> T:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None
        return _decode(response, type_)

    async def start(self, type: str, **config: Any) -> StartAnswer:
        body = {"type": type, **config}
        return await self._call("POST", "/admin/jobs/start", StartAnswer, json=body)

    async def status(self, job_id: str) -> Job:
        return await self._call("GET", f"/admin/jobs/{job_id}/status", Job)

    async def list(
        self,
        status: str | None = None,
        type: str | None = None,
        limit: int | None = None,
        **labels: str,
    ) -> list[Job]:
        params = _list_params(status, type, limit, labels)
        return await self._call("GET", "/admin/jobs", list[Job], params=params)

    async def cancel(self, job_id: str) -> CancelAnswer:
        return await self._call("POST", f"/admin/jobs/{job_id}/cancel", CancelAnswer)

    async def pause(self, job_id: str, freeze: bool = False) -> PauseAnswer:
        body = {"mode": "freeze"} if freeze else None
        return await self._call("POST", f"/admin/jobs/{job_id}/pause", PauseAnswer, json=body)

    async def resume(self, job_id: str) -> PauseAnswer:
        return await self._call("POST", f"/admin/jobs/{job_id}/resume", PauseAnswer)

    async def put_group(self, group_wa_id: str, body: Any) -> dict[str, Any]:
        return await self._call("PUT", f"/admin/groups/{group_wa_id}", dict[str, Any], json=body)

    async def group(self, group_wa_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/admin/groups/{group_wa_id}", dict[str, Any])

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Follow the job's events until it ends; its final state. TimeoutError past ``timeout``."""
        async with asyncio.timeout(timeout):
            async for event in self.events(job_id):
                if event.kind == "finished":
                    job: Job = event.data
                    return job if job.result is not None else await self.status(job_id)
        return await self.status(job_id)

    async def events(
        self, job_id: str | None = None, last_event_id: str | None = None, **filters: str
    ) -> AsyncIterator[Event]:
        path = _events_path(job_id)
        last = last_event_id
        failed_since: float | None = None
        delay = 0.2
        timeout = httpx.Timeout(self._http.timeout.connect, read=60.0)
        while True:
            headers = {"accept": "text/event-stream"}
            if last is not None:
                headers["last-event-id"] = last
            try:
                async with self._http.stream(
                    "GET", path, params=filters, headers=headers, timeout=timeout
                ) as response:
                    if response.status_code == 503:  # shutting down, too many connections
                        await response.aread()
                        raise _Retry(_error(response))
                    if response.status_code != 200:
                        await response.aread()
                        raise _error(response)
                    failed_since, delay = None, 0.2
                    parser = _Parser()
                    async for line in response.aiter_lines():
                        event = parser.line(line)
                        if not event:
                            continue
                        if event.id is not None:
                            last = event.id
                        yield event
                        if job_id is not None and event.kind == "finished":
                            return
            except (httpx.TransportError, _Retry) as exc:
                now = time.monotonic()
                failed_since = failed_since or now
                if now - failed_since > self.reconnect_s:
                    raise _given_up(self.url, exc) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
