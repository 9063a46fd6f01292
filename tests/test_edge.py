"""The edge's checks and the connection limits, in process."""

from __future__ import annotations

import pytest

from supervisor.api.edge import check_body, check_query
from supervisor.api.errors import ApiError
from supervisor.server import limits_for
from supervisor.settings import Settings


def _refused(check: object, value: bytes) -> str | None:
    with pytest.raises(ApiError) as info:
        check(value)  # type: ignore[operator]
    assert info.value.status == 400
    return info.value.field


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"name": "a\\u0000"}', "name"),
        (b'{"members": [{"whatsappId": "x"}, {"whatsappId": "\\u0000"}]}', "members[1].whatsappId"),
        (b'["ok", "\\u0000"]', "[1]"),
        (b'{"a\\u0000": 1}', "body"),
    ],
)
def test_a_nul_in_a_body_is_refused_where_it_is(body: bytes, field: str) -> None:
    assert _refused(check_body, body) == field


def test_bodies_without_a_nul_pass() -> None:
    check_body(b'{"name": "a\\\\u0000"}')  # an escaped backslash, then text: no NUL
    check_body(b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}")  # deep: the decode's to judge
    check_body(b"{not json \\u0000")  # malformed: the decode's to judge


def test_deep_nesting_with_a_nul_is_walked_without_recursion() -> None:
    deep = b"[" * 900 + b'"\\u0000"' + b"]" * 900
    assert _refused(check_body, deep) == "[0]" * 900


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (b"type=a%00", "type"),
        (b"limit=5&type=%ff", "type"),
        (b"%ff=1", "query"),
        (b"a%00=1", "query"),
    ],
)
def test_query_parameters_are_checked_by_name(query: bytes, field: str) -> None:
    assert _refused(check_query, query) == field


def test_good_queries_pass() -> None:
    check_query(b"")
    check_query(b"groupWaId=120363%40g.us&limit=10&name=caf%C3%A9+x")


def test_connections_get_what_the_job_slots_leave() -> None:
    limits = limits_for(Settings(max_concurrent_jobs=4, max_connections=1000), 256)
    assert limits.fd_cap == 256 - 64 - 8 * 5
    assert limits.max_connections == limits.fd_cap
    roomy = limits_for(Settings(max_concurrent_jobs=4, max_connections=1000), 65536)
    assert roomy.max_connections == 1000
    with pytest.raises(SystemExit):
        limits_for(Settings(max_concurrent_jobs=100), 256)
