"""The OpenAPI document: every route declared, the committed copy current, served as built."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from supervisor.api import openapi
from supervisor.api.access import Role, needs
from supervisor.app import create_app
from supervisor.settings import Settings
from tests.conftest import ROOT, Server


def _app_routes() -> list[object]:
    settings = dataclasses.replace(Settings.from_env(), job_modules=("tests.jobs",))
    return list(create_app(settings).routes)


def test_every_route_declares_its_contract() -> None:
    routes = _app_routes()
    assert openapi.undeclared(routes) == []
    document = openapi.build(routes)
    served = {(p, m) for p, ops in document["paths"].items() for m in ops}
    expected = {(p, m.lower()) for p, m, _ in openapi.operations(routes)}
    assert served == expected


def test_a_route_without_a_contract_is_named() -> None:
    @needs(Role.VIEWER)
    async def forgotten(request: Request) -> Response:
        return Response()

    routes = [*_app_routes(), Route("/forgotten", forgotten, methods=["GET"])]
    assert openapi.undeclared(routes) == ["GET /forgotten"]


def test_docs_copy_is_the_generated_document() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSUP_")}
    env.pop("DATABASE_URL", None)
    generated = subprocess.run(
        [sys.executable, "-m", "supervisor", "openapi"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "docs" / "openapi.json").read_text()
    assert committed == generated, (
        "docs/openapi.json is stale: python -m supervisor openapi > docs/openapi.json"
    )


def test_served_document_is_openapi_31(make_server: Callable[..., Server]) -> None:
    server = make_server(JOBSUP_JOB_MODULES="")
    response = server.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["openapi"] == "3.1.0"
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert document == committed
    assert document["components"]["schemas"]["ErrorEnvelope"]["required"] == ["error"]
