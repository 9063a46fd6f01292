"""GET /metrics: the Prometheus text exposition (``supervisor.metrics``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from supervisor.api.access import Role, needs
from supervisor.api.contract import Text, contract
from supervisor.metrics import CONTENT_TYPE, Metrics


@needs(Role.VIEWER)
@contract(returns=Text(CONTENT_TYPE, "Prometheus text format"))
async def metrics(request: Request) -> Response:
    """Jobs, latencies, crashes, database writes and HTTP requests, for Prometheus."""
    registry: Metrics = request.app.state.metrics
    return Response(await registry.scrape(), media_type=CONTENT_TYPE)
