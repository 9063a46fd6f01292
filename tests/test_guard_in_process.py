"""The guard in process (Starlette's TestClient): a failure points at the middleware."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning
from starlette.routing import Route

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from supervisor.app import create_app
from supervisor.settings import Settings
from tests.conftest import ADMIN_TOKEN, TOKENS, VIEWER_TOKEN


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'jobsup.db'}",
        job_modules=("tests.jobs",),
        tokens=TOKENS,
        allowed_hosts=("testserver",),
        rate_start_per_min=0,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_each_request_is_matched_to_its_route_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    matches = Route.matches

    def counting(self: Route, scope: Any) -> Any:
        calls.append(self.path)
        return matches(self, scope)

    monkeypatch.setattr(Route, "matches", counting)
    auth = {"authorization": f"Bearer {VIEWER_TOKEN}"}
    assert client.get("/admin/session", headers=auth).json() == {
        "name": "viewer",
        "role": "viewer",
    }
    # The guard's loop over the routes, reused by the router: each route tried once.
    assert calls.count("/healthz") == 1
    assert calls[-2:] == ["/admin/session", "/admin/session"]  # login (POST), then this one
    calls.clear()
    assert client.get("/admin/jobs/nope/status", headers=auth).status_code == 404
    assert client.get("/admin/nope", headers=auth).status_code == 404
    assert client.delete("/admin/jobs", headers=auth).status_code == 405


def test_the_route_found_is_the_one_that_answers(client: TestClient) -> None:
    admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    # Two routes share a path: each method reaches its own endpoint and role.
    assert (
        client.put("/admin/groups/g", json={"name": "g", "members": []}, headers=admin).status_code
        == 200
    )
    viewer = {"authorization": f"Bearer {VIEWER_TOKEN}"}
    assert client.get("/admin/groups/g", headers=viewer).status_code == 200
    assert client.put("/admin/groups/g", json={"name": "g"}, headers=viewer).status_code == 403
    assert client.get("/admin/jobs/", headers=viewer, follow_redirects=False).status_code == 307
