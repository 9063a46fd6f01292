"""Job types: a name, a config schema (msgspec Struct) and a run function.

Adding a job type is one module and one registration::

    class ResizeConfig(JobConfig, tag="resize"):
        path: str

    @job_type(ResizeConfig)
    def resize(ctx: JobContext, config: ResizeConfig) -> dict: ...

The supervisor loads the modules named in ``BUILTIN_MODULES`` plus those in
``JOBSUP_JOB_MODULES``, in the front process and in the forkserver.

A module that needs more than job types contributes it here too, and the
supervisor takes it from here without naming the module: its tables
(``extend(component, migrations=…)``), its HTTP routes (``routes=`` a
``"module:attribute"`` imported in the front process only, never in the
forkserver), its settings (``Setting``: a ``JOBSUP_*`` variable its checks
read as ``policy.<name>``) and, per job type, the label the supervisor
indexes its jobs by (``label=Label("groupWaId", …)``: ``GET /admin/jobs?groupWaId=``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from workers.context import JobContext
from workers.db import Database
from workers.limits import Limits

BUILTIN_MODULES = ("removal.jobs",)


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


class Policy:
    """Deployment limits a job type's check enforces: each ``Setting``'s value, by name.

    The supervisor fills it from the environment (``policy(env)``); a check
    reads ``policy.min_delay_ms``.
    """

    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        object.__setattr__(self, "_values", values)

    def __getattr__(self, name: str) -> Any:
        values: dict[str, Any] = object.__getattribute__(self, "_values")
        if name in values:
            return values[name]
        raise AttributeError(f"no setting {name!r} in this policy")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a Policy is read-only")

    def __repr__(self) -> str:
        values: dict[str, Any] = object.__getattribute__(self, "_values")
        return f"Policy({values!r})"


class Secret:
    """A secret setting's value: its repr never shows it (a Policy may be printed)."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "Secret('***')" if self.value else "Secret('')"

    def __bool__(self) -> bool:
        return bool(self.value)


@dataclass(frozen=True, slots=True)
class Setting:
    """A deployment setting a job-type module reads: ``JOBSUP_<NAME>``, parsed and bounded.

    ``variable`` names another variable instead (one the module shares with
    another tool, such as a gateway's URL). A ``secret`` one is read as a
    ``Secret`` and its value is never quoted in an error.
    """

    name: str
    default: Any
    parse: Callable[[str], Any] = int
    minimum: float | None = None
    variable: str | None = None
    secret: bool = False

    @property
    def env(self) -> str:
        return self.variable or "JOBSUP_" + self.name.upper()

    def read(self, env: Mapping[str, str]) -> Any:
        """The value from ``env``; ValueError naming the variable when it is not valid."""
        raw = env.get(self.env, "")
        if self.secret:
            return Secret(raw)
        if raw == "":
            return self.default
        try:
            value = self.parse(raw)
        except ValueError as exc:
            raise ValueError(f"{self.env}={raw!r} is not valid: {exc}") from None
        if self.minimum == 0 and value < 0:
            raise ValueError(f"{self.env} must not be negative")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.env} must be at least {self.minimum}")
        return value


@dataclass(frozen=True, slots=True)
class Label:
    """What the supervisor indexes a job by: a name (a list filter) and the config's value."""

    name: str
    value: Callable[[Any], str | None]


@dataclass(frozen=True, slots=True)
class Extension:
    """What a job-type module adds to the supervisor besides its job types."""

    component: str
    migrations: tuple[tuple[int, str], ...] = ()
    routes: str | None = None  # "module:attribute", a list of Starlette routes
    settings: tuple[Setting, ...] = ()
    # Checks the settings together (one needs another); ValueError naming the variable.
    validate: Callable[[Policy], None] | None = None
    # "module:attribute", a function given the jobsup command's subparsers;
    # a subcommand it adds sets ``run`` (args -> exit status) as a default.
    commands: str | None = None


CheckFunction = Callable[[Any, Database, Policy], None]

# A start request's own fields, beside ``type``: the supervisor reads them
# before the job type's config is decoded, so no config may use these names.
RESERVED_FIELDS = frozenset(
    {"runAt", "delayS", "priority", "retry", "idempotencyKey", "after", "approval", "limits"}
)


@dataclass(frozen=True, slots=True)
class Retry:
    """A job type's retry policy: a failed attempt runs again, up to ``max_attempts`` runs.

    The wait before attempt n+1 is ``backoff_s * 2**(n-1)`` (at most
    ``max_backoff_s``), times 1 ± up to ``jitter``. ``retry_on`` names the
    failures worth another attempt: an error's ``reason`` (``crashed``: the
    child died without a word; ``interrupted``: its instance died) or the
    ``type`` of the exception the job raised (``"GatewayError"``). An
    exception is not retried unless named: a bad config fails the same way
    every time.
    """

    max_attempts: int = 3
    backoff_s: float = 5.0
    jitter: float = 0.2
    max_backoff_s: float = 3600.0
    retry_on: tuple[str, ...] = ("crashed", "interrupted")

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.backoff_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("Retry: max_attempts >= 1, backoff_s >= 0, jitter 0 to 1")


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
    # Indexed beside the job: the list of jobs filters on it.
    label: Label | None = None
    # Saves its place (ctx.save): a shutdown puts it back in the queue, and
    # its next run, on any instance, resumes from there.
    resumable: bool = False
    # Failed attempts run again (a start's ``retry`` may say otherwise);
    # None: one attempt, unless the start asks for more.
    retry: Retry | None = None
    # Safe to stop whole (SIGSTOP to its process group) by a pause in freeze
    # mode: nothing it talks to times out or misbehaves while it is stopped.
    freezable: bool = False
    # What its jobs may use unless a start says otherwise (``workers.limits``).
    limits: Limits | None = None


_types: dict[str, JobType] = {}
_extensions: list[Extension] = []


def job_type(
    config: type[JobConfig],
    *,
    idempotent: bool = False,
    exclusive_key: Callable[[Any], str | None] | None = None,
    check: CheckFunction | None = None,
    label: Label | None = None,
    resumable: bool = False,
    retry: Retry | None = None,
    freezable: bool = False,
    limits: Limits | None = None,
) -> Callable[[RunFunction], RunFunction]:
    name = config.__struct_config__.tag
    if not isinstance(name, str):
        raise TypeError(f"{config.__name__} needs a string tag: class X(JobConfig, tag='name')")
    taken = RESERVED_FIELDS & set(config.__struct_encode_fields__)
    if taken:
        raise TypeError(f"{config.__name__}: {sorted(taken)} are a start request's own fields")

    def register(run: RunFunction) -> RunFunction:
        _types[name] = JobType(
            name,
            config,
            run,
            idempotent,
            exclusive_key,
            check,
            label,
            resumable,
            retry,
            freezable,
            limits,
        )
        return run

    return register


def get(name: str) -> JobType:
    return _types[name]


def names() -> list[str]:
    return sorted(_types)


def extend(
    component: str,
    *,
    migrations: Iterable[tuple[int, str]] = (),
    routes: str | None = None,
    settings: Iterable[Setting] = (),
    validate: Callable[[Policy], None] | None = None,
    commands: str | None = None,
) -> None:
    """Contribute a module's tables, routes, settings and commands (once per component)."""
    if any(e.component == component for e in _extensions):
        return  # a module imported again under another name
    _extensions.append(
        Extension(component, tuple(migrations), routes, tuple(settings), validate, commands)
    )


def migrations() -> dict[str, list[tuple[int, str]]]:
    """Each contributing component's migrations, in the order the modules were loaded."""
    return {e.component: list(e.migrations) for e in _extensions if e.migrations}


def commands() -> list[Callable[[Any], None]]:
    """Every contributed ``jobsup`` subcommand's registering function, imported now."""
    found: list[Callable[[Any], None]] = []
    for extension in _extensions:
        if extension.commands is not None:
            module, _, attribute = extension.commands.partition(":")
            found.append(getattr(importlib.import_module(module), attribute))
    return found


def routes() -> list[Any]:
    """Every contributed route, imported now (front process only)."""
    found: list[Any] = []
    for extension in _extensions:
        if extension.routes is not None:
            module, _, attribute = extension.routes.partition(":")
            found += getattr(importlib.import_module(module), attribute)
    return found


def policy(env: Mapping[str, str]) -> Policy:
    """Every contributed setting's value from ``env``; ValueError naming a bad variable."""
    values = {s.name: s.read(env) for e in _extensions for s in e.settings}
    policy = Policy(**values)
    for extension in _extensions:
        if extension.validate is not None:
            extension.validate(policy)
    return policy


def setting_names() -> list[str]:
    """The variables the loaded modules' settings are read from (``JOBSUP_*`` or their own)."""
    return [s.env for e in _extensions for s in e.settings]


def label_names() -> set[str]:
    return {t.label.name for t in _types.values() if t.label is not None}


def modules(extra: Iterable[str]) -> list[str]:
    """The job modules to import: the built-in ones, then ``extra``."""
    return [*BUILTIN_MODULES, *extra]


def load(extra: Iterable[str]) -> None:
    for module in modules(extra):
        importlib.import_module(module)
