"""The HTTP contract again, through Starlette's TestClient: a failure points at a handler.

The cases are test_api's own, collected here a second time: only the
``server`` they run against differs (the app in this process, its jobs in
real children). Cases that need a real socket or their own server settings
stay in test_api only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # This Starlette prefers the httpx2 fork for its TestClient; httpx, which
    # the project already uses, still works and is what it falls back to.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from supervisor.app import create_app
from supervisor.errors import Invalid
from supervisor.parsing import decode
from supervisor.settings import Settings
from tests.conftest import ApiHelpers
from tests.test_api import (  # noqa: F401  (collected here, against this module's server)
    api,
    test_405_names_the_allowed_methods,
    test_api_answers_carry_the_safety_headers,
    test_groups,
    test_healthz,
    test_list_newest_first_with_filters,
    test_list_rejects_bad_queries,
    test_second_removal_for_a_group_is_409,
    test_start_and_status_shape,
    test_start_rejects_a_missing_window_only_for_the_workflow,
    test_start_rejects_bad_bodies,
    test_start_rejects_bad_fields,
    test_unknown_group_is_404_at_start,
    test_unknown_job_is_404,
    test_unknown_route_and_method_are_json_errors,
)


class InProcess(ApiHelpers):
    def __init__(self, client: TestClient) -> None:
        self.client = client


@pytest.fixture
def server(tmp_path: Path) -> Iterator[InProcess]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'jobsup.db'}",
        job_modules=("tests.jobs",),
        cancel_grace_s=0.5,
        kill_after_s=0.5,
        cancel_wait_s=3.0,
        job_env={"JOBSUP_MIN_DELAY_MS": "0"},
    )
    with TestClient(create_app(settings)) as client:
        yield InProcess(client)


def test_a_whole_float_is_an_integer_and_other_refusals_name_their_field() -> None:
    """JSON Schema counts 2.0 as an integer; a raw field never hides the real error."""

    class Body(msgspec.Struct, forbid_unknown_fields=True):
        count: int
        job: msgspec.Raw = msgspec.Raw(b"null")

    assert decode(b'{"count": 2.0}', Body).count == 2
    with pytest.raises(Invalid) as half:
        decode(b'{"count": 2.5}', Body)
    assert half.value.field == "count"
    with pytest.raises(Invalid) as unknown:
        decode(b'{"count": 1, "job": {}, "extra": 1}', Body)
    assert unknown.value.field == "extra"
    with pytest.raises(Invalid) as beside_raw:  # the float is whole; the raw field blocks it
        decode(b'{"count": 2.0, "job": {}}', Body)
    assert beside_raw.value.field == "count"
