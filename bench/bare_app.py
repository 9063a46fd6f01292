"""A bare Starlette route returning a dict, served exactly as jobsup serves its app.

The API-under-load figure compares jobsup's status route against this one:
same uvicorn configuration (``supervisor.server.make_server``), same loop and
HTTP parser, same access-log setting, nothing behind the route.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supervisor.server import make_server
from supervisor.settings import Settings

PAYLOAD = {
    "id": "0193a1b2c3d4e5f6a7b8c9d0",
    "type": "bench_chatty",
    "status": "running",
    "progress": {"processed": 1234, "total": None, "message": "chatty", "phase": None},
}


async def bare(request: Request) -> Response:
    return JSONResponse(PAYLOAD)


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper())
    app = Starlette(routes=[Route("/bare", bare, methods=["GET"])])
    make_server(app, settings).run()


if __name__ == "__main__":
    main()
