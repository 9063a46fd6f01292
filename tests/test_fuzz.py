"""Schemathesis against a live server: every route of /openapi.json, every check.

The server is the real one in a subprocess on a fresh SQLite file, with the
built-in job types only (the fuzzer starts real jobs when it happens on a
valid body). The credential comes from ``server.client.headers``, the one
place the test servers keep it. Hypothesis is derandomized, so a run is
reproducible; the example count gives each route hundreds of inputs across
the phases (explicit examples, coverage, fuzzing) in well under two minutes.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CHECKS, load_all_checks

from supervisor.api.jobs import MAX_LIST_LIMIT_WITH_RESULT
from tests.conftest import Server

# Generated inputs per route and mode; each answer also makes some checks
# send more requests of their own (without the credential, other methods).
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
EXAMPLES = {POSITIVE: 120, NEGATIVE: 60}
# Streams that end only when the client goes: nothing to validate but their start.
STREAMING = "/admin/jobs/events"


def _expressible(case: Any) -> bool:
    """Whether a schema-valid case is also valid by the rules JSON Schema cannot say.

    The API refuses (400, naming the field) a cursor that names no job, a
    page of jobs with their results over MAX_LIST_LIMIT_WITH_RESULT, and a
    group listing one member twice; the fuzzer's valid cases leave those out.
    """
    query = case.query or {}
    if "before" in query:
        return False
    if query.get("include") == "result" and int(query.get("limit", 0)) > MAX_LIST_LIMIT_WITH_RESULT:
        return False
    members = case.body.get("members") if isinstance(case.body, dict) else None
    if isinstance(members, list):
        ids = [m.get("whatsappId") for m in members if isinstance(m, dict)]
        return len(ids) == len(set(ids))
    return True


@pytest.fixture
def fuzzed(make_server: Callable[..., Server]) -> Server:
    return make_server(JOBSUP_JOB_MODULES="", JOBSUP_LOG_LEVEL="warning")


def _document(server: Server) -> dict[str, Any]:
    response = server.client.get("/openapi.json")
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    with httpx.Client(base_url=server.url) as anonymous:
        enforced = anonymous.get("/openapi.json").status_code == 401
    if not enforced:  # a server running open promises no 401 to check
        for operations in document["paths"].values():
            for operation in operations.values():
                operation["security"] = []
    return document


def _operations(server: Server) -> list[tuple[Any, list[Any]]]:
    """Each operation, with the modes to fuzz it in: negative only where something
    can be made invalid (a path parameter cannot: every string names some id)."""
    document = _document(server)
    schema = schemathesis.openapi.from_dict(document)
    found = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == STREAMING:
            continue
        spec = document["paths"][op.path][op.method.lower()]
        takes = "requestBody" in spec or any(p["in"] == "query" for p in spec.get("parameters", []))
        found.append((op, list(schemathesis.GenerationMode) if takes else [POSITIVE]))
    return found


def _fuzz(operation: Any, mode: Any, server: Server, session: requests.Session) -> None:
    """One operation, in one generation mode, with every check on each answer."""
    headers = dict(server.client.headers)
    cases = operation.as_strategy(generation_mode=mode)
    if mode is POSITIVE:
        cases = cases.filter(_expressible)

    @settings(
        max_examples=EXAMPLES[mode],
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=cases)
    def run(case: Any) -> None:
        case.call_and_validate(
            base_url=server.url,
            session=session,
            headers=headers,
            checks=CHECKS.get_all(),
            timeout=30,
        )

    run()


def test_every_route_conforms(fuzzed: Server) -> None:
    load_all_checks()
    operations = _operations(fuzzed)
    assert len(operations) >= 14
    failures = []
    with requests.Session() as session:
        for operation, modes in operations:
            for mode in modes:
                try:
                    _fuzz(operation, mode, fuzzed, session)
                except (Exception, BaseExceptionGroup) as exc:  # every route, then report
                    text = "".join(traceback.format_exception(exc))[-6000:]
                    failures.append(f"{operation.label} ({mode.value}): {text}")
    assert not failures, "\n\n".join(failures)
