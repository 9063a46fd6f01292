"""What a pause or resume answers when a cancel (or the job's end) overtakes it.

The race is narrow over HTTP (a cancel between the resume's check and its
answer), so the service is driven here with the job's states given.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from supervisor.errors import NotPaused, NotRunning
from supervisor.service import JobService
from supervisor.state import JobStatus
from tests.helpers import pending_job


class _Scheduler:
    def pause_local(self, job_id: str, freeze: bool = False) -> bool:
        return True

    def resume_local(self, job_id: str) -> bool:
        return True


class _Table:
    async def wait(self, job_id: str, seconds: float, until: Any) -> None:
        return None


class _Settings:
    cancel_wait_s = 0.0


def _service(before: JobStatus, after: JobStatus) -> JobService:
    service = JobService.__new__(JobService)
    service.scheduler = _Scheduler()  # type: ignore[assignment]
    service.table = _Table()  # type: ignore[assignment]
    service.settings = _Settings()  # type: ignore[assignment]
    job = pending_job("ticker")

    async def get(job_id: str) -> Any:
        job.status = before
        return job

    async def answer(job_id: str) -> Any:
        job.status = after
        return job

    service.get = get  # type: ignore[method-assign]
    service._answer = answer  # type: ignore[method-assign]
    return service


@pytest.mark.parametrize("overtaken", [JobStatus.CANCELLING, JobStatus.CANCELLED])
def test_a_resume_a_cancel_overtook_is_refused(overtaken: JobStatus) -> None:
    service = _service(JobStatus.PAUSED, overtaken)
    with pytest.raises(NotPaused):
        asyncio.run(service.resume("j"))


def test_a_resume_answers_the_running_job() -> None:
    service = _service(JobStatus.PAUSED, JobStatus.RUNNING)
    assert asyncio.run(service.resume("j")).status is JobStatus.RUNNING


@pytest.mark.parametrize("overtaken", [JobStatus.CANCELLING, JobStatus.COMPLETED])
def test_a_pause_a_cancel_or_the_end_overtook_is_refused(overtaken: JobStatus) -> None:
    service = _service(JobStatus.RUNNING, overtaken)
    with pytest.raises(NotRunning):
        asyncio.run(service.pause("j"))
