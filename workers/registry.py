"""Job types: a name, a config schema (msgspec Struct) and a run function.

Adding a job type is one module and one registration::

    class ResizeConfig(JobConfig, tag="resize"):
        path: str

    @job_type(ResizeConfig)
    def resize(ctx: JobContext, config: ResizeConfig) -> dict: ...

The supervisor loads the modules named in ``BUILTIN_MODULES`` plus those in
``JOBSUP_JOB_MODULES``, in the front process and in the forkserver.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgspec

from workers.context import JobContext
from workers.db import Database

BUILTIN_MODULES = ("workers.removal",)


class JobConfig(
    msgspec.Struct, tag_field="type", forbid_unknown_fields=True, rename="camel", kw_only=True
):
    """Base of every job config; the subclass's ``tag`` is the job type's name."""


class ConfigRejected(Exception):
    """A config that decodes but cannot run (unknown group, too short a delay)."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


RunFunction = Callable[[JobContext, Any], Any]


@dataclass(frozen=True, slots=True)
class Policy:
    """Deployment limits a job type's check enforces; the supervisor fills it from settings."""

    # Floor for the pause between batches of calls to a rate-limited service.
    min_delay_ms: int = 0


CheckFunction = Callable[[Any, Database, Policy], None]


@dataclass(frozen=True, slots=True)
class JobType:
    name: str
    config: type[JobConfig]
    run: RunFunction
    # Re-queued rather than failed when its instance dies mid-run.
    idempotent: bool = False
    # Jobs with the same key never run (or wait) at the same time.
    exclusive_key: Callable[[Any], str | None] | None = None
    # Runs in the front process before a job is accepted; raises ConfigRejected.
    check: CheckFunction | None = None


_types: dict[str, JobType] = {}


def job_type(
    config: type[JobConfig],
    *,
    idempotent: bool = False,
    exclusive_key: Callable[[Any], str | None] | None = None,
    check: CheckFunction | None = None,
) -> Callable[[RunFunction], RunFunction]:
    name = config.__struct_config__.tag
    if not isinstance(name, str):
        raise TypeError(f"{config.__name__} needs a string tag: class X(JobConfig, tag='name')")

    def register(run: RunFunction) -> RunFunction:
        _types[name] = JobType(name, config, run, idempotent, exclusive_key, check)
        return run

    return register


def get(name: str) -> JobType:
    return _types[name]


def names() -> list[str]:
    return sorted(_types)


def all_types() -> list[JobType]:
    return [_types[name] for name in names()]


def load(modules: Iterable[str]) -> None:
    for module in (*BUILTIN_MODULES, *modules):
        importlib.import_module(module)
