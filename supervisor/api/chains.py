"""/admin/chains and the approval of a job: start a chain, show it, cancel it; approve, reject."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api.access import Role, audited, limited, needs
from supervisor.api.common import json, parse
from supervisor.api.contract import Deferred, contract
from supervisor.api.guard import caller_of, recorded
from supervisor.api.jobs import start_body
from supervisor.chains import MAX_STEPS, ChainIn, Chains, ChainView
from supervisor.job import Job
from supervisor.state import JobStatus


class ChainStarted(msgspec.Struct, rename="camel"):
    chain_id: str
    job_ids: list[str]
    statuses: list[JobStatus]


def _chain_body() -> Any:
    """The chain's body as documented: its steps are start bodies (``api.jobs``'s union)."""
    steps = Annotated[list[start_body()], msgspec.Meta(min_length=1, max_length=MAX_STEPS)]  # type: ignore[misc]
    return msgspec.defstruct("ChainBody", [("steps", steps)], forbid_unknown_fields=True)


def _chains(request: Request) -> Chains:
    return Chains(request.app.state.jobs)


@needs(Role.OPERATOR)
@audited("chain.start")
@limited
@contract(body=Deferred(_chain_body), responses={202: ChainStarted}, errors=(404, 409, 429))
async def start_chain(request: Request) -> Response:
    """Start jobs linked in order: each step waits for the one before it to complete."""
    chain = await parse(request, ChainIn)
    jobs = await _chains(request).start(chain, caller_of(request))
    started = ChainStarted(jobs[0].chain_id or "", [j.id for j in jobs], [j.status for j in jobs])
    recorded(request, started.chain_id)  # each step's entry is in the insert's transaction
    return json(started, 202)


@needs(Role.VIEWER)
@contract(returns=ChainView, errors=(404,))
async def get_chain(request: Request) -> Response:
    """A chain's steps, in order, each with its state."""
    return json(await _chains(request).get(request.path_params["chainId"]))


@needs(Role.OPERATOR)
@audited("chain.cancel", target="chainId")
@contract(returns=ChainView, errors=(404,))
async def cancel_chain(request: Request) -> Response:
    """Cancel every step of the chain not yet finished."""
    chains = _chains(request)
    return json(await chains.cancel(request.path_params["chainId"], caller_of(request)))


@needs(Role.OPERATOR)
@audited("job.approve", target="jobId")
@contract(returns=Job, errors=(404, 409))
async def approve(request: Request) -> Response:
    """Approve a job awaiting approval: it becomes pending (409 if it is not awaiting)."""
    return json(await _chains(request).approve(request.path_params["jobId"], caller_of(request)))


@needs(Role.OPERATOR)
@audited("job.reject", target="jobId")
@contract(returns=Job, errors=(404, 409))
async def reject(request: Request) -> Response:
    """Reject a job awaiting approval: it ends cancelled (reason rejected), as do its followers."""
    return json(await _chains(request).reject(request.path_params["jobId"], caller_of(request)))


routes = [
    Route("/admin/chains", start_chain, methods=["POST"]),
    Route("/admin/chains/{chainId}", get_chain, methods=["GET"]),
    Route("/admin/chains/{chainId}/cancel", cancel_chain, methods=["POST"]),
    Route("/admin/jobs/{jobId}/approve", approve, methods=["POST"]),
    Route("/admin/jobs/{jobId}/reject", reject, methods=["POST"]),
]
