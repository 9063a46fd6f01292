"""The Evolution gateway attacked from outside: a hung gateway must not freeze the API.

A real server, a real (fake) Evolution API over HTTP that stops answering.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import Server, wait_until
from tests.fake_evolution import FakeEvolution, Fault, running
from tests.helpers import removal
from tests.test_evolution import GROUP, evolution_env, participants, prepared


@pytest.fixture
def fake() -> FakeEvolution:
    fake = FakeEvolution()
    fake.add_group(GROUP, participants())
    return fake


@pytest.fixture
def evolution_url(fake: FakeEvolution) -> Iterator[str]:
    with running(fake) as url:
        yield url


def test_starts_waiting_on_a_hung_gateway_leave_the_reads_answering(
    make_server: Callable[..., Server], evolution_url: str, fake: FakeEvolution
) -> None:
    """Each start looks at Evolution first; a gateway that hangs holds those starts only.

    Two starts wait on it (as many as the database has reader threads on
    SQLite): a list of jobs, the groups and a job's status still answer
    while they wait.
    """
    server = prepared(make_server(**evolution_env(evolution_url, EVOLUTION_TIMEOUT_S="60")))
    done_id = server.start_job({"type": "quick", "value": 1})
    server.wait_status(done_id, "completed")
    fake.fail_next("state", Fault(delay_s=12), Fault(delay_s=12))  # longer than the look waits
    answers: list[int] = []

    def start() -> None:
        with httpx.Client(base_url=server.url, headers=server.client.headers, timeout=60) as c:
            answers.append(c.post("/admin/jobs/start", json=removal(GROUP)).status_code)

    starts = [threading.Thread(target=start) for _ in range(2)]
    for thread in starts:
        thread.start()
    try:
        wait_until(lambda: len(fake.calls_to("state")) >= 2, timeout=30)
        assert server.client.get("/admin/jobs").status_code == 200
        assert server.client.get(f"/admin/groups/{GROUP}").status_code == 200
        assert server.client.get(f"/admin/jobs/{done_id}/status").status_code == 200
        assert all(t.is_alive() for t in starts), answers  # answered while the starts wait
    finally:
        for thread in starts:
            thread.join(60)
    assert sorted(answers) == [503, 503]  # the look timed out: unavailable, nothing written
