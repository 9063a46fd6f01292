"""Resumable removals attacked from outside: a deploy or a crash at the worst moment.

Real servers, real signals, a real (fake) Evolution API over HTTP. Each test
interrupts a removal where a remote gateway leaves work in flight, resumes
it, and checks that the world (who Evolution removed), the history and the
job's result tell one story.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Server
from tests.fake_evolution import FakeEvolution, running
from tests.helpers import removal, rows
from tests.invariants import assert_removal_invariants
from tests.test_evolution import (
    GROUP,
    IDLE,
    evolution_env,
    history,
    key_of,
    participants,
    prepared,
    sent_id,
)
from tests.test_resume import sigterm_everyone


@pytest.fixture
def fake() -> FakeEvolution:
    fake = FakeEvolution()
    fake.add_group(GROUP, participants())
    return fake


@pytest.fixture
def evolution_url(fake: FakeEvolution) -> Iterator[str]:
    with running(fake) as url:
        yield url


def test_a_deploy_during_an_evolution_call_resumes_without_losing_the_batch(
    make_server: Callable[..., Server], evolution_url: str, fake: FakeEvolution, sqlite_url: str
) -> None:
    """SIGTERM to every process while a batch's call is in flight, then a fresh start.

    The call took effect in WhatsApp, but its answer never came: the batch's
    intents are left in the journal. The resumed job (which skips its sync)
    must settle them from the participants list before it goes on, so its
    result and history include that batch, and the journal is left empty.
    """
    server = prepared(make_server(**evolution_env(evolution_url)))
    fake.hold_removals = True  # the first batch takes effect, then its answer waits
    job_id = server.start_job(removal(GROUP))
    assert fake.holding.wait(30)
    sigterm_everyone(server)
    (row,) = rows(sqlite_url, "SELECT status, owner FROM jobs WHERE id = ?", job_id)
    assert (row["status"], row["owner"]) == ("pending", None)
    assert len(fake.removed) == 2  # the first batch, which nobody recorded yet

    fake.hold_removals = False
    fake.release.set()
    server.start()
    job = server.wait_status(job_id, "completed", "failed", timeout=60)
    assert job["status"] == "completed", job
    assert job["resumes"] == 1
    everyone = sorted(key_of(n) for n in IDLE)
    assert sorted(fake.removed) == sorted(sent_id(n) for n in IDLE)  # each once
    done = history(server)
    assert sorted(r["whatsappId"] for r in done) == everyone
    assert {(r["outcome"], r["jobId"]) for r in done} == {("SUCCESS", job_id)}
    assert sorted(job["result"]["removedWhatsappIds"]) == everyone  # result == history
    assert rows(sqlite_url, "SELECT whatsapp_id FROM removal_intents") == []
    assert_removal_invariants(sqlite_url)
