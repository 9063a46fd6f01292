"""The server's log: text or one JSON object per line, each line with its request and job.

``setup(level, format)`` configures the root logger once, at ``jobsup serve``.
Two context variables say what a line is about:

- ``request_id``: set by the request-id middleware (``supervisor.api.observe``)
  for everything done while serving one request;
- ``job_id``: for code that acts on one job throughout; a single line names
  its job with ``extra=about_job(job_id)`` (the job code paths do).

A line's own ``extra`` wins over the context. In text format the ids are
appended as ``[request=… job=…]``, so text lines carry them too.
"""

from __future__ import annotations

import json
import logging
import time
from contextvars import ContextVar
from typing import Any

request_id: ContextVar[str | None] = ContextVar("jobsup_request_id", default=None)
job_id: ContextVar[str | None] = ContextVar("jobsup_job_id", default=None)

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s%(ids)s"


def about_job(job_id_: str) -> dict[str, Any]:
    """``extra=`` for one log line about a job."""
    return {"job_id": job_id_}


class _Context(logging.Filter):
    """Puts the request and job ids on each record (the record's own ``extra`` first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id.get()
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id.get()
        ids = [
            f"{name}={value}"
            for name, value in (("request", record.request_id), ("job", record.job_id))
            if value is not None
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, requestId, jobId, exception."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.gmtime(record.created)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", seconds) + f".{int(record.msecs):03d}Z"
        line: dict[str, Any] = {
            "time": stamp,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if getattr(record, "request_id", None) is not None:
            line["requestId"] = record.request_id
        if getattr(record, "job_id", None) is not None:
            line["jobId"] = record.job_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def setup(level: str, format_: str) -> None:
    """Configure the root logger's one handler (stderr) for ``format_`` (text or json)."""
    handler = logging.StreamHandler()
    handler.addFilter(_Context())
    handler.setFormatter(JsonFormatter() if format_ == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
