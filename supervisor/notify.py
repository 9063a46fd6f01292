"""Notifications: a signed POST to each JOBSUP_NOTIFY_URLS entry when a job ends.

Two halves, joined by the outbox table (``store/outbox.py``):

- ``Notices`` makes what a state write adds to the outbox: the body
  ``{"event": "job.finished", "job": {...}}`` (the job as ``GET /status``
  shows it; a result over 64 KiB is left out, ``"resultOmitted": true``)
  for each configured URL. The write that moves a job inserts it in the
  same transaction (``store.jobs.update_job``, ``claims.cancel_unclaimed``,
  ``claims.rescue_job``, and the held jobs' moves in ``store.chains``,
  given ``Notices.notice_of``), so a crash loses none.
- ``Sender`` runs in the front process: it claims due rows (a lease, so two
  instances never send one row at the same time), POSTs each with
  httpx (no redirects followed, a deadline per attempt, at most
  ``CONCURRENCY`` at once), and records the outcome. A failed attempt waits
  an exponential backoff with jitter, until ``JOBSUP_NOTIFY_RETRY_S`` after
  the row was written; then the row is ``failed``.

What a receiver gets (docs/api.md, "Notifications"): the body, and

    X-Jobsup-Event: job.finished
    X-Jobsup-Delivery: <the row's delivery id; the same on every attempt>
    X-Jobsup-Attempt: <1, 2, ...>
    X-Jobsup-Timestamp: <unix seconds of this attempt>
    X-Jobsup-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." + body, keyed by the secret>

Delivery is at least once: a sender that stops between the receiver's
answer and its record sends the row again (same delivery id), so receivers
dedupe on ``X-Jobsup-Delivery``. The URLs come from the settings only,
never from a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable

import httpx

from supervisor.events import Event, Kind
from supervisor.job import Job
from supervisor.settings import Settings
from supervisor.state import TERMINAL, JobStatus
from supervisor.store import DatabaseBusy, Store, outbox
from workers.db import DatabaseUnavailable
from workers.times import now_ms

log = logging.getLogger("jobsup.notify")

FINISHED = "job.finished"
AWAITING_APPROVAL = "job.awaiting_approval"
# One attempt's deadline, connection to answer; the lease a claim takes is
# well past it, so a row in flight is never claimed again meanwhile.
SEND_TIMEOUT_S = 10.0
LEASE_MS = 60_000
# Attempts in flight at once, per instance.
CONCURRENCY = 16
# Backoff after the nth failed attempt: BASE * 2**(n-1), at most CAP, times
# a jitter of 0.5 to 1 (receivers that failed together do not retry together).
BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 600.0


def event_of(status: JobStatus) -> str | None:
    """The notification a state sends, if any: a final state, or awaiting an approval."""
    if status in TERMINAL:
        return FINISHED
    if status is JobStatus.AWAITING_APPROVAL:
        return AWAITING_APPROVAL
    return None


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256, keyed by ``secret``, of ``"<timestamp>."`` + body."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def backoff_s(attempt: int) -> float:
    """How long to wait after the ``attempt``-th failed attempt (1-based)."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(attempt - 1, 30))
    return ceiling * random.uniform(0.5, 1.0)


class Notices:
    """What a job's state write adds to the outbox, from the settings' URLs."""

    def __init__(self, urls: tuple[str, ...], retry_s: float) -> None:
        self.urls = urls
        self.retry_ms = int(retry_s * 1000)

    @classmethod
    def of(cls, settings: Settings) -> Notices:
        return cls(settings.notify_urls, settings.notify_retry_s)

    def notice(self, job: Job) -> outbox.Notice | None:
        """The outbox rows the job's current state sends, or None (no URL, or no event)."""
        event = event_of(job.status)
        if event is None or not self.urls:
            return None
        return outbox.job_notice(job, event, self.urls, self.retry_ms)

    @property
    def notice_of(self) -> outbox.NoticeOf | None:
        """What the store's writes are given to build the notices of the jobs they move
        (their own, and the held jobs a write releases, approves or ends); None
        when no URL is configured, so the store reads no row for them."""
        return self.notice if self.urls else None


class Sender:
    """Delivers the outbox's due rows; every instance runs one (rows are leased)."""

    def __init__(self, store: Store, secret: str, poll_s: float) -> None:
        self.store = store
        self.secret = secret
        self.poll_s = poll_s
        # Told of each attempt's outcome: delivered, retried or failed (metrics).
        self.on_outcome: Callable[[str], None] = lambda outcome: None
        self._wake = asyncio.Event()
        self._slots = CONCURRENCY
        self._sending: set[asyncio.Task[None]] = set()
        self._client = httpx.AsyncClient(
            timeout=SEND_TIMEOUT_S, follow_redirects=False, trust_env=False
        )

    def on_event(self, event: Event) -> None:
        """A bus listener: a job ended, or came to await an approval, here (a start,
        or its parent's end): rows were just written; look now."""
        if event.kind is Kind.FINISHED or event_of(event.status) == AWAITING_APPROVAL:
            self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Claim and send due rows; wait for the next due one, a wake-up, or the poll period."""
        while True:
            wait = self.poll_s
            self._wake.clear()
            try:
                wait = min(wait, await self._turn())
            except (DatabaseUnavailable, DatabaseBusy) as exc:
                log.warning("notifications: database unavailable (%s)", exc)
            except Exception:
                log.exception("notifications: sending failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _turn(self) -> float:
        """One look at the outbox; returns how long until the next due row (at most poll_s)."""
        due = await self.store.call(outbox.next_due)
        now = now_ms()
        if due is None:
            return self.poll_s
        if due > now:
            return (due - now) / 1000
        if self._slots <= 0:
            return self.poll_s  # a slot's end wakes the loop
        rows = await self.store.call(outbox.claim, now, LEASE_MS, self._slots, write=True)
        for row in rows:
            self._slots -= 1
            task = asyncio.ensure_future(self._deliver(row))
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return 0.0 if len(rows) and self._slots > 0 else self.poll_s

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._slots += 1
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("notification delivery failed", exc_info=task.exception())

    async def _deliver(self, row: outbox.Row) -> None:
        status, error = await self._post(row)
        if status is not None and 200 <= status < 300:
            await self.store.call(outbox.delivered, row.id, status, now_ms(), write=True)
            log.info("notification %s for job %s delivered", row.delivery, row.job_id)
            self.on_outcome("delivered")
            return
        next_at = now_ms() + int(backoff_s(row.attempts) * 1000)
        state = await self.store.call(
            outbox.retry, row.id, row.attempts, status, error, next_at, now_ms(), write=True
        )
        log.warning(
            "notification %s for job %s, attempt %d: %s (%s)",
            row.delivery,
            row.job_id,
            row.attempts,
            error,
            "gave up" if state == outbox.FAILED else "will retry",
        )
        self.on_outcome("failed" if state == outbox.FAILED else "retried")

    async def _post(self, row: outbox.Row) -> tuple[int | None, str]:
        """One attempt: the receiver's status (None if none came) and what went wrong."""
        body = row.body.encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "jobsup-notify",
            "X-Jobsup-Event": row.event,
            "X-Jobsup-Delivery": row.delivery,
            "X-Jobsup-Attempt": str(row.attempts),
            "X-Jobsup-Timestamp": str(timestamp),
            "X-Jobsup-Signature": sign(self.secret, timestamp, body),
        }
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                # The answer's body is never read: a receiver cannot make us hold it.
                async with self._client.stream(
                    "POST", row.url, content=body, headers=headers
                ) as response:
                    status = response.status_code
        except TimeoutError:
            return None, f"no answer within {SEND_TIMEOUT_S:g} s"
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return status, "" if 200 <= status < 300 else f"HTTP {status}"

    async def stop(self) -> None:
        """Stop sending; rows in flight keep their lease and are sent again after it."""
        for task in list(self._sending):
            task.cancel()
        for task in list(self._sending):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._client.aclose()
