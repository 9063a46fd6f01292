"""The Evolution client in process, against the fake Evolution server: faults, retries, matching.

Each answer Evolution may give becomes data or a ``GatewayError`` a person
can read; retries wait through the caller's sleep (recorded here, never
slept), honour Retry-After, and stop when the sleep raises (a cancel).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from removal.gateways import GatewayError
from removal.gateways.evolution import jid
from removal.gateways.evolution_client import EvolutionClient, EvolutionSettings, flatten
from tests.fake_evolution import INSTANCE, KEY, FakeEvolution, Fault, running
from workers import registry
from workers.context import JobCancelled
from workers.registry import Secret

GROUP = "120363000000000077@g.us"


@pytest.fixture
def fake() -> Iterator[tuple[FakeEvolution, str]]:
    fake = FakeEvolution()
    member = {"id": "111111111111111@lid", "phoneNumber": "5511999990000@s.whatsapp.net"}
    fake.add_group(GROUP, [member])
    with running(fake) as url:
        yield fake, url


_clients: list[EvolutionClient] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


def client(url: str, sleeps: list[float], key: str = KEY, **more: Any) -> EvolutionClient:
    settings = EvolutionSettings(
        url=url,
        key=Secret(key),
        instance=more.pop("instance", INSTANCE),
        timeout_s=more.pop("timeout_s", 5.0),
        backoff_s=1.0,
        retries=3,
    )
    _clients.append(EvolutionClient(settings, sleep=sleeps.append))
    return _clients[-1]


def test_a_wrong_key_is_named_without_being_quoted(fake: tuple[FakeEvolution, str]) -> None:
    _, url = fake
    with pytest.raises(GatewayError) as caught:
        client(url, [], key="not-the-key-123").connection_state()
    assert caught.value.kind == GatewayError.UNAVAILABLE
    assert "EVOLUTION_API_KEY" in caught.value.reason
    assert "not-the-key-123" not in caught.value.reason


def test_an_unknown_instance_and_an_unknown_group_are_told_apart(
    fake: tuple[FakeEvolution, str],
) -> None:
    _, url = fake
    with pytest.raises(GatewayError, match="no instance 'nobody'"):
        client(url, [], instance="nobody").connection_state()
    with pytest.raises(GatewayError) as caught:
        client(url, []).participants("120363000000000404@g.us", retry=False)
    assert caught.value.kind == GatewayError.NO_GROUP


def test_retries_back_off_exponentially_and_honour_retry_after(
    fake: tuple[FakeEvolution, str],
) -> None:
    evolution, url = fake
    evolution.fail_next("participants", Fault(429), Fault(503), Fault(429, retry_after=7))
    sleeps: list[float] = []
    assert len(client(url, sleeps).participants(GROUP)) == 1
    assert 0.5 <= sleeps[0] <= 1.0  # first wait: 1 s, jittered down to half at most
    assert 1.0 <= sleeps[1] <= 2.0  # doubled
    assert sleeps[2] == 7.0


def test_retries_are_bounded(fake: tuple[FakeEvolution, str]) -> None:
    evolution, url = fake
    evolution.fail_next("participants", *[Fault(500, "boom")] * 4)
    sleeps: list[float] = []
    with pytest.raises(GatewayError, match="gave up after 4 attempts") as caught:
        client(url, sleeps).participants(GROUP)
    assert caught.value.transient
    assert len(sleeps) == 3


def test_a_cancel_during_a_wait_stops_the_retries(fake: tuple[FakeEvolution, str]) -> None:
    evolution, url = fake
    evolution.fail_next("update", Fault(429), Fault(429))

    def cancelled(seconds: float) -> None:
        raise JobCancelled

    evolution_client = client(url, [])
    evolution_client._sleep = cancelled
    with pytest.raises(JobCancelled):
        evolution_client.remove(GROUP, ["111111111111111@lid"])
    assert len(evolution.calls_to("update")) == 1


def test_a_removal_without_an_answer_is_unsure(fake: tuple[FakeEvolution, str]) -> None:
    evolution, url = fake
    evolution.fail_next("update", *[Fault(0, delay_s=0.5)] * 4)
    with pytest.raises(GatewayError) as caught:
        client(url, [], timeout_s=0.2).remove(GROUP, ["111111111111111@lid"])
    assert caught.value.unsure  # it may have happened: the next sync will tell


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ("Unauthorized", "Unauthorized"),
        (["No participants", "Error: item-not-found"], "No participants; Error: item-not-found"),
        ([['instance requires property "webhook"']], 'instance requires property "webhook"'),
        (
            [{"property": "participants[0]", "message": "must be numeric"}],
            "participants[0]: must be numeric",
        ),
    ],
)
def test_every_shape_of_evolution_message_reads_as_text(message: Any, text: str) -> None:
    assert flatten(message) == text


def test_ids_compare_without_device_suffix_and_bare_numbers_as_phone_ids() -> None:
    assert jid("5511999990000:12@s.whatsapp.net") == "5511999990000@s.whatsapp.net"
    assert jid("5511999990000") == "5511999990000@s.whatsapp.net"
    assert jid("123@lid") == "123@lid"


def test_the_key_is_a_secret_in_every_printed_policy() -> None:
    import removal.jobs  # noqa: F401  (registers the settings)

    policy = registry.policy({"EVOLUTION_API_KEY": "s3cret-value"})
    assert policy.evolution_api_key.value == "s3cret-value"
    assert "s3cret-value" not in repr(policy)
