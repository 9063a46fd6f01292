"""Schemathesis against a live server: every route of /openapi.json, every check.

The server is the real one in a subprocess on a fresh SQLite file, with the
built-in job types only (the fuzzer starts real jobs when it happens on a
valid body). The credential comes from ``server.client.headers``, the one
place the test servers keep it. One test per route, all on one server, so
what one route leaves in the database (groups, jobs) the next one meets.

Each route gets EXAMPLES schema-valid inputs and, where it takes a query or
a body, invalid ones too (a path id cannot be invalid: any string names some
id). Hypothesis is derandomized, so a run is reproducible. Every check
schemathesis has runs on every answer.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import CHECKS, load_all_checks

from supervisor.api.jobs import MAX_LIST_LIMIT_WITH_RESULT
from tests.conftest import ROOT, Server

# Generated inputs per route and mode.
POSITIVE, NEGATIVE = schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE
EXAMPLES = {POSITIVE: 120, NEGATIVE: 60}
# Streams that end only when the client goes: nothing to validate but their
# start; and the WebSocket routes, whose handshake an HTTP fuzzer cannot make
# (tests/test_websocket.py drives them with a WebSocket client).
STREAMING = frozenset({"/admin/jobs/events", "/admin/jobs/ws", "/admin/jobs/{jobId}/ws"})


# A schedule's cron, zone and job are read by their own grammars (croniter,
# zoneinfo, the job type's config), which JSON Schema cannot hold: a valid
# schedule is all but never generated, so only the 2xx-for-valid check is off.
UNCHECKED = {"PUT /admin/schedules/{name}": {"positive_data_acceptance"}}


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
    if isinstance(members, list):  # a member's phone id and LID (altId) both name it
        ids = [m.get(k) for m in members if isinstance(m, dict) for k in ("whatsappId", "altId")]
        named = [i for i in ids if i is not None]
        return len(named) == len(set(named))
    return True


# The operations of a server with the built-in job types: the committed
# document, which test_contract holds equal to the one the server serves.
_DOCUMENTED = json.loads((ROOT / "docs" / "openapi.json").read_text())["paths"]
OPERATIONS = [
    f"{method.upper()} {path}"
    for path, methods in _DOCUMENTED.items()
    for method in methods
    if path not in STREAMING
]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for every operation: what one leaves in the database, the next meets."""
    folder = tmp_path_factory.mktemp("fuzz")
    env = {
        "DATABASE_URL": f"sqlite:///{folder / 'jobsup.db'}",
        "JOBSUP_JOB_MODULES": "",
        "JOBSUP_LOG_LEVEL": "warning",
    }
    server = Server(env, folder / "server.log").start()
    yield server
    server.stop()
    server.client.close()
    print(f"--- server.log ---\n{server.log()}")


@pytest.fixture(scope="module")
def operations(fuzzed: Server) -> dict[str, tuple[Any, list[Any]]]:
    return {op.label: (op, modes) for op, modes in _operations(fuzzed)}


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
        if op.path in STREAMING:
            continue
        spec = document["paths"][op.path][op.method.lower()]
        takes = "requestBody" in spec or any(p["in"] == "query" for p in spec.get("parameters", []))
        found.append((op, list(schemathesis.GenerationMode) if takes else [POSITIVE]))
    return found


def _sent_as_generated(case: Any) -> bool:
    """Whether an invalid case reaches the server as invalid as it was generated.

    A query parameter whose value is null, or an empty list, is dropped by
    the HTTP client, so a case whose only fault was such a parameter (or the
    missing Authorization, which every request here carries) arrives valid
    and is rightly answered 200; schemathesis would call that accepting
    invalid data.
    """
    query = case.query or {}
    return not any(
        value is None or (isinstance(value, list) and (not value or None in value))
        for value in query.values()
    )


def _fuzz(operation: Any, mode: Any, server: Server, session: requests.Session) -> None:
    """One operation, in one generation mode, with every check on each answer."""
    headers = dict(server.client.headers)
    # Named as the document's bearer scheme names it, so that schemathesis knows
    # the credential for the one it gave and probes the route without it.
    if "authorization" in headers:
        headers["Authorization"] = headers.pop("authorization")
    skipped = UNCHECKED.get(operation.label, set())
    checks = [check for check in CHECKS.get_all() if check.__name__ not in skipped]
    cases = operation.as_strategy(generation_mode=mode)
    cases = cases.filter(_expressible if mode is POSITIVE else _sent_as_generated)

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
            checks=checks,
            timeout=30,
        )

    run()


def test_the_document_has_every_route(operations: dict[str, Any]) -> None:
    assert sorted(operations) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_route_conforms(label: str, fuzzed: Server, operations: dict[str, Any]) -> None:
    """Every check on every answer, in each generation mode the route has inputs for."""
    load_all_checks()
    operation, modes = operations[label]
    failures = []
    with requests.Session() as session:
        for mode in modes:
            try:
                _fuzz(operation, mode, fuzzed, session)
            except (Exception, BaseExceptionGroup) as exc:  # both modes, then report
                text = "".join(traceback.format_exception(exc))[-6000:]
                failures.append(f"{label} ({mode.value}): {text}")
    assert not failures, "\n\n".join(failures)
