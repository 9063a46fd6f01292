"""The domain's errors: what went wrong, in the domain's words.

The service and everything below raise these; ``supervisor.api.errors`` maps
each kind to an HTTP status and the error envelope, once, at the edge (as
Starlette's ``exception_handlers`` do). Nothing here knows about HTTP.
"""

from __future__ import annotations


class JobsupError(Exception):
    """Base of the domain's errors: a message for people and, when one is at fault, a field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Invalid(JobsupError):
    """The request names something that cannot be: a bad value, an unknown type."""


class MalformedJson(Invalid):
    """The body is not JSON at all (or nested past what we decode)."""


class Rejected(Invalid):
    """A job type's check refused the config (``ConfigRejected``), with the answer it chose.

    ``status`` is part of the job-type author's API (``ConfigRejected(status=…)``):
    404 reads as not found, anything else as an invalid field.
    """

    def __init__(self, message: str, field: str | None, status: int) -> None:
        super().__init__(message, field)
        self.status = status


class NotFound(JobsupError):
    """The job, group or list asked for does not exist."""


class Conflict(JobsupError):
    """A live job already holds the exclusive key."""


class NotCancellable(JobsupError):
    """The job has already ended."""


class NotRunning(JobsupError):
    """Only a running job can be paused."""


class NotPaused(JobsupError):
    """Only a paused job can be resumed."""


class QueueFull(JobsupError):
    """Too many jobs are waiting; retry later."""


class ShuttingDown(JobsupError):
    """This instance takes no new jobs."""


class Unavailable(JobsupError):
    """Something the request needs outside jobsup (a job type's gateway) cannot serve it now."""
