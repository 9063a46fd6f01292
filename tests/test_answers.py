"""Every route answers alike: query parameters, booleans, times, error messages."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec

from supervisor.api.common import json
from supervisor.wire import wire
from tests.conftest import Server, wait_until
from tests.helpers import group_body, pending_job
from workers.times import MAX_TIME, MIN_TIME, from_ms, iso

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TIME_FIELDS = {
    "createdAt",
    "startedAt",
    "completedAt",
    "requestedAt",
    "exitedAt",
    "updatedAt",
    "savedAt",
}
TIME_FIELDS |= {"joinedAt", "lastActiveAt", "removedAt", "at"}


def times(value: Any) -> Iterator[str]:
    """Every time field's value in an answer, at any depth."""
    if isinstance(value, list):
        for item in value:
            yield from times(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in TIME_FIELDS and item is not None:
                yield item
            elif key not in ("config", "result"):
                yield from times(item)


def refused(server: Server, method: str, path: str, field: str) -> str:
    response = server.client.request(method, path)
    assert response.status_code == 400, (path, response.text)
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid_field", field), path
    assert error["message"].startswith(field), error
    return str(error["message"])


def test_every_route_refuses_a_query_parameter_it_does_not_take(server: Server) -> None:
    assert server.client.put("/admin/groups/g1", json=group_body(inactive=2)).status_code == 200
    job_id = server.start_job({"type": "quick"})
    server.wait_status(job_id, "completed")
    for method, path in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/admin/jobs"),
        ("POST", "/admin/jobs/start"),
        ("GET", f"/admin/jobs/{job_id}/status"),
        ("GET", f"/admin/jobs/{job_id}/result/items"),
        ("POST", f"/admin/jobs/{job_id}/cancel"),
        ("GET", "/admin/groups/g1"),
        ("PUT", "/admin/groups/g1"),
        ("GET", "/admin/groups/g1/members"),
        ("PUT", "/admin/groups/g1/whitelist"),
        ("GET", "/admin/groups/g1/removals"),
    ]:
        message = refused(server, method, f"{path}?limmit=5", "limmit")
        assert "unknown query parameter" in message
    # The declared ones still pass, the job types' labels included.
    assert server.client.get("/admin/jobs?groupWaId=g1&limit=1").status_code == 200


def test_booleans_are_exactly_true_or_false(server: Server) -> None:
    assert server.client.put("/admin/groups/g1", json=group_body(inactive=2)).status_code == 200
    for spelling in ("TRUE", "True", "1", "yes", ""):
        path = f"/admin/groups/g1/members?includeRemoved={spelling}"
        assert "must be true or false" in refused(server, "GET", path, "includeRemoved")
    assert server.client.get("/admin/groups/g1/members?includeRemoved=true").status_code == 200


def test_error_messages_start_with_their_field_and_say_things_once(server: Server) -> None:
    post: Callable[[bytes], dict[str, Any]] = lambda body: server.client.post(  # noqa: E731
        "/admin/jobs/start", content=body, headers={"content-type": "application/json"}
    ).json()["error"]
    truncated = post(b'{"type": "quick"')
    assert truncated["code"] == "invalid_json"
    assert truncated["message"] == "malformed JSON: input data was truncated"
    trailing = post(b'{"type": "quick",}')
    assert trailing["message"].count("malformed") == 1, trailing
    for body, field in [
        (b'{"type": "removal_workflow"}', "groupWaId"),
        (b'{"type": "quick", "extra": 1}', "extra"),
        (b'{"type": "nope"}', "type"),
        (b'{"type": "removal_workflow", "groupWaId": "g", "batchSize": "x"}', "batchSize"),
    ]:
        error = post(body)
        assert (error["code"], error["field"]) == ("invalid_field", field), error
        assert error["message"].startswith(f"{field}: "), error
    put = server.client.put("/admin/groups/g1", json={"name": "x", "members": [{}]})
    assert put.json()["error"]["message"].startswith("members[0].whatsappId: ")
    assert refused(server, "GET", "/admin/jobs?status=nope", "status").startswith("status: ")
    assert refused(server, "GET", "/admin/jobs?limit=0", "limit").startswith("limit: ")


def test_a_time_with_an_unencoded_plus_gets_a_hint(server: Server) -> None:
    # "+2" is no offset the server can read back as a "+": it says to escape it.
    path = "/admin/jobs?createdAfter=2026-01-01T00:00:00+2"
    message = refused(server, "GET", path, "createdAfter")
    assert "%2B" in message
    # A space before a full trailing offset can only be a "+", and reads as one.
    ok = server.client.get("/admin/jobs?createdAfter=2026-01-01T00:00:00+02:00")
    assert ok.status_code == 200, ok.text
    assert "%2B" not in refused(server, "GET", "/admin/jobs?createdAfter=soon", "createdAfter")


def test_times_have_milliseconds_and_read_the_same_from_memory_and_store(
    make_server: Callable[..., Server],
) -> None:
    first = make_server()
    assert first.client.put("/admin/groups/g1", json=group_body(inactive=1)).status_code == 200
    job_id = first.start_job({"type": "sleepy", "steps": 1, "stepMs": 30_000})
    first.wait_status(job_id, "running")
    first.client.post(f"/admin/jobs/{job_id}/cancel")
    first.wait_status(job_id, "cancelled")
    # The end record (resources) follows the final state once the child is reaped.
    from_memory = wait_until(lambda: (answer := first.status(job_id))["resources"] and answer)
    answers = [
        from_memory,
        first.client.get("/admin/jobs").json(),
        first.client.get("/admin/groups/g1").json(),
        first.client.get("/admin/groups/g1/members").json(),
    ]
    found = [t for answer in answers for t in times(answer)]
    assert len(found) >= 8
    assert all(TIME.match(t) for t in found), found
    first.stop()
    second = make_server()
    assert second.status(job_id) == from_memory


def test_one_text_form_for_every_time() -> None:
    """In process: the format itself, at the edges of what a datetime holds."""
    assert iso(from_ms(1_795_938_113_300)) == "2026-11-29T07:41:53.300Z"
    assert iso(from_ms(0)) == "1970-01-01T00:00:00.000Z"
    assert iso(MIN_TIME) == "0001-01-01T00:00:00.000Z"
    assert iso(MAX_TIME) == "9999-12-31T23:59:59.999Z"
    plus_two = datetime(2026, 1, 1, 2, 0, 0, 123_999, tzinfo=timezone(timedelta(hours=2)))
    assert iso(plus_two) == "2026-01-01T00:00:00.123Z"  # cut as the store rounds
    job = pending_job()
    encoded = msgspec.json.decode(json(wire([job])).body)  # type: ignore[arg-type]
    assert encoded[0]["createdAt"] == iso(job.created_at)


class _Inner(msgspec.Struct):
    at: datetime


class _NoTimes(msgspec.Struct):
    name: str
    count: int


class _Outer(msgspec.Struct):
    plain: _NoTimes
    nested: _Inner | None
    many: list[_Inner]
    loose: Any  # a field typed Any is looked at as it is
    text: str


def test_times_are_found_wherever_a_struct_may_hold_one() -> None:
    """Only fields whose type can hold a time are walked, and every such time is converted."""
    moment = from_ms(1_795_938_113_300)
    plain = _NoTimes("n", 1)
    value = _Outer(plain, _Inner(moment), [_Inner(moment), _Inner(moment)], moment, "t")
    walked = wire(value)
    assert walked.plain is plain  # a struct that cannot hold a time is not copied
    assert walked.nested.at == walked.many[1].at == walked.loose == "2026-11-29T07:41:53.300Z"
    assert value.nested is not None
    assert value.nested.at == moment  # the original is untouched
