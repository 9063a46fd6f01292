"""/admin/jobs: start, status, cancel, pause, resume, list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.access import Role, audited, limited, needs
from supervisor.api.common import json, read_json
from supervisor.api.contract import NO_CONTENT, Deferred, contract
from supervisor.api.errors import ApiError
from supervisor.api.guard import caller_of, recorded
from supervisor.api.query import query_int, query_label, query_status, query_time
from supervisor.job import Job, summary
from supervisor.parsing import decode
from supervisor.service import JobService, JobTypeView
from supervisor.state import TERMINAL, JobStatus
from supervisor.store.job_logs import LogPage
from supervisor.store.jobs import JobFilter, UnknownCursor
from workers import registry

MAX_LIST_LIMIT = 1000
# With results included, a page is smaller: each result may be megabytes.
MAX_LIST_LIMIT_WITH_RESULT = 100
MAX_RESULT_PAGE = 10_000
MAX_LOG_PAGE = 10_000
MAX_LINE_NO = 2**62  # a line number past any job's
# A job's config is a handful of fields, kept in memory while the job lives
# and sent in every list answer: a start body is bounded far below a group's.
MAX_START_BYTES = 64 * 1024


class StartAnswer(msgspec.Struct, rename="camel", omit_defaults=True):
    job_id: str
    status: JobStatus
    message: str
    run_at: datetime | None = None  # a delayed start: when it becomes claimable
    replayed: bool = False  # 200: its idempotencyKey named a job already accepted


class RerunAnswer(msgspec.Struct, rename="camel"):
    job_id: str
    status: JobStatus
    rerun_of: str | None
    message: str


class CancelAnswer(msgspec.Struct, rename="camel"):
    job_id: str
    status: JobStatus


class PauseRequest(msgspec.Struct, forbid_unknown_fields=True):
    """How to pause: at the job's next context call, or its whole process group at once."""

    mode: Literal["cooperative", "freeze"] = "cooperative"


class PauseAnswer(msgspec.Struct, rename="camel"):
    job_id: str
    status: JobStatus


class ResultPage(msgspec.Struct, rename="camel", kw_only=True):
    job_id: str
    name: str = msgspec.field(name="list")  # "list" would shadow the builtin in the class body
    total: int
    offset: int
    items: list[Any]


def start_body() -> Any:
    """The start body: one of the job types' configs, told apart by ``type``."""
    types = tuple(registry.get(name).config for name in registry.names())
    return Union[types]  # noqa: UP007 (a union built at run time)


_Time = Annotated[datetime, msgspec.Meta(tz=True)]  # ISO 8601 with a zone
_Offset = Annotated[int, msgspec.Meta(ge=0)]
_Page = Annotated[int, msgspec.Meta(ge=1, le=MAX_RESULT_PAGE)]


def _list_query() -> dict[str, Any]:
    query: dict[str, Any] = {
        "status": JobStatus,
        "type": str,
        "limit": Annotated[int, msgspec.Meta(ge=1, le=MAX_LIST_LIMIT)],
        "before": str,
        "createdAfter": _Time,
        "createdBefore": _Time,
        "include": Literal["result"],
        "chainId": str,
    }
    # The job types' label filters (?groupWaId=).
    return query | {name: str for name in sorted(registry.label_names())}


def _service(request: Request) -> JobService:
    service: JobService = request.app.state.jobs
    return service


@needs(Role.OPERATOR)
@audited("job.start")
@limited
@contract(
    body=Deferred(start_body),
    responses={200: StartAnswer, 202: StartAnswer},
    errors=(404, 409, 429),
)
async def start(request: Request) -> Response:
    """Start a job: the body is the job type's config, its name in ``type``, and the
    start's own fields (runAt or delayS, priority, retry, idempotencyKey, after, approval).

    200 with ``replayed``: the idempotencyKey names a job already accepted.
    """
    body = await read_json(request, MAX_START_BYTES)
    started = await _service(request).start(body, caller_of(request))
    job = started.job
    if started.replayed:  # its idempotency key names a job already accepted: that one
        message = f"{job.type} job already accepted with this idempotencyKey"
        return json(StartAnswer(job.id, job.status, message, replayed=True), 200)
    recorded(request, job.id)  # in the insert's transaction
    message = f"{job.type} job accepted"
    return json(StartAnswer(job.id, job.status, message, run_at=job.run_at), 202)


@needs(Role.VIEWER)
@contract(returns=Job, errors=(404,))
async def status(request: Request) -> Response:
    """A job: its state, progress, result, error and cancel."""
    return json(await _service(request).get(request.path_params["jobId"]))


@needs(Role.VIEWER)
@contract(
    query={"offset": _Offset, "limit": _Page},
    returns=ResultPage,
    errors=(404,),
    headers={"X-Next-Offset": "the offset of the next page, when there is one"},
)
async def result_list(request: Request) -> Response:
    """One page of a list in a job's result (a large group's members, say)."""
    job = await _service(request).get(request.path_params["jobId"])
    name = request.path_params["list"]
    items = job.result.get(name) if isinstance(job.result, dict) else None
    if not isinstance(items, list):
        raise ApiError(404, "not_found", f"list: the job's result has no list {name!r}", "list")
    offset = query_int(request, "offset", 0, 0, len(items))
    limit = query_int(request, "limit", 1000, 1, MAX_RESULT_PAGE)
    page = items[offset : offset + limit]
    response = json(
        ResultPage(job_id=job.id, name=name, total=len(items), offset=offset, items=page)
    )
    if offset + limit < len(items):
        response.headers["X-Next-Offset"] = str(offset + limit)
    return response


@needs(Role.VIEWER)
@contract(
    query={
        "after": Annotated[int, msgspec.Meta(ge=0, le=MAX_LINE_NO)],
        "limit": Annotated[int, msgspec.Meta(ge=1, le=MAX_LOG_PAGE)],
    },
    returns=LogPage,
    errors=(404,),
)
async def logs(request: Request) -> Response:
    """A page of the job's captured output (stdout, stderr, ctx.log lines), oldest first:
    the lines numbered above ``after``; pass ``nextAfter`` as the next ``after``."""
    after = query_int(request, "after", 0, 0, MAX_LINE_NO)
    limit = query_int(request, "limit", 1000, 1, MAX_LOG_PAGE)
    return json(await _service(request).logs(request.path_params["jobId"], after, limit))


@needs(Role.OPERATOR)
@audited("job.rerun", target="jobId")
@limited
@contract(responses={202: RerunAnswer}, errors=(404, 409, 429))
async def rerun(request: Request) -> Response:
    """Start a new job with a finished job's type and config."""
    job = await _service(request).rerun(request.path_params["jobId"], caller_of(request))
    recorded(request, job.id)  # in the insert's transaction, on the new job's id
    message = f"{job.type} job accepted, a rerun of {job.rerun_of}"
    return json(RerunAnswer(job.id, job.status, job.rerun_of, message), 202)


@needs(Role.OPERATOR)
@audited("job.delete", target="jobId")
@contract(responses={204: NO_CONTENT}, errors=(404, 409))
async def delete(request: Request) -> Response:
    """Delete a finished job's record."""
    await _service(request).delete(request.path_params["jobId"])
    return Response(status_code=204)


@needs(Role.VIEWER)
@contract(returns=list[JobTypeView])
async def job_types(request: Request) -> Response:
    """Each job type: its name, description and its config's JSON Schema."""
    return json(_service(request).types())


@needs(Role.OPERATOR)
@audited("job.cancel", target="jobId")
@limited
@contract(responses={200: CancelAnswer, 202: CancelAnswer}, errors=(404, 409, 429))
async def cancel(request: Request) -> Response:
    """Cancel a job: 200 once it is final, 202 while it stops."""
    job = await _service(request).cancel(request.path_params["jobId"], caller=caller_of(request))
    if job.status in TERMINAL:  # cancelled, or it completed or failed first
        return json(CancelAnswer(job.id, job.status))
    return json(CancelAnswer(job.id, JobStatus.CANCELLING), 202)


# A pause body is one small field.
MAX_PAUSE_BYTES = 1024


@needs(Role.OPERATOR)
@audited("job.pause", target="jobId")
@limited
@contract(
    body=PauseRequest,
    responses={200: PauseAnswer, 202: PauseAnswer},
    errors=(400, 404, 429),
)
async def pause(request: Request) -> Response:
    """Pause a running job: 200 once it is paused, 202 while it gets to its next context call.

    The body is optional: ``{"mode": "freeze"}`` stops the job's whole
    process group at once, for job types declared freezable.
    """
    mode = PauseRequest()
    if request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers:
        mode = decode(await read_json(request, MAX_PAUSE_BYTES), PauseRequest)
    job = await _service(request).pause(request.path_params["jobId"], mode.mode == "freeze")
    if job.status is JobStatus.PAUSED:
        return json(PauseAnswer(job.id, job.status))
    # Still running: its instance has the request and has not acted on it yet.
    status = JobStatus.PAUSING if job.status is JobStatus.RUNNING else job.status
    return json(PauseAnswer(job.id, status), 202)


@needs(Role.OPERATOR)
@audited("job.resume", target="jobId")
@limited
@contract(returns=PauseAnswer, errors=(400, 404, 429))
async def resume(request: Request) -> Response:
    """Resume a paused job where it held (a job paused across a restart goes back to the queue)."""
    job = await _service(request).resume(request.path_params["jobId"])
    return json(PauseAnswer(job.id, job.status))


def _filter(request: Request) -> JobFilter:
    params = request.query_params
    include = params.get("include")
    if include not in (None, "result"):
        raise ApiError(400, "invalid_field", "include: the only value is 'result'", "include")
    high = MAX_LIST_LIMIT if include is None else MAX_LIST_LIMIT_WITH_RESULT
    return JobFilter(
        status=query_status(request),
        type=params.get("type"),
        label=query_label(request),
        chain_id=params.get("chainId"),
        before=params.get("before"),
        created_after=query_time(request, "createdAfter"),
        created_before=query_time(request, "createdBefore"),
        limit=query_int(request, "limit", 50, 1, high),
        with_result=include is not None,
    )


@needs(Role.VIEWER)
@contract(
    query=Deferred(_list_query),
    returns=list[Job],  # without ``result`` unless include=result
    headers={"X-Next-Before": "the cursor (``before``) of the next page, when there is one"},
)
async def list_jobs(request: Request) -> Response:
    """A JSON array, newest first; ``X-Next-Before`` names the cursor of the next page."""
    f = _filter(request)
    try:
        jobs = await _service(request).list(f)
    except UnknownCursor:
        raise ApiError(400, "invalid_field", "before: no job with that id", "before") from None
    page = jobs[: f.limit]
    response = json(page if f.with_result else [summary(job) for job in page])
    if len(jobs) > f.limit:
        response.headers["X-Next-Before"] = jobs[f.limit - 1].id
    return response


routes = [
    Route("/admin/jobs/start", start, methods=["POST"]),
    Route("/admin/jobs/{jobId}/status", status, methods=["GET"]),
    Route("/admin/jobs/{jobId}/result/{list}", result_list, methods=["GET"]),
    Route("/admin/jobs/{jobId}/logs", logs, methods=["GET"]),
    Route("/admin/jobs/{jobId}/cancel", cancel, methods=["POST"]),
    Route("/admin/jobs/{jobId}/pause", pause, methods=["POST"]),
    Route("/admin/jobs/{jobId}/resume", resume, methods=["POST"]),
    Route("/admin/jobs/{jobId}/rerun", rerun, methods=["POST"]),
    Route("/admin/jobs/{jobId}", delete, methods=["DELETE"]),
    Route("/admin/job-types", job_types, methods=["GET"]),
    Route("/admin/jobs", list_jobs, methods=["GET"]),
]
