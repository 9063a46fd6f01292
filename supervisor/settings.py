"""Every setting jobsup reads, from the environment, in one place.

Variables are ``JOBSUP_*`` plus ``PORT`` and ``DATABASE_URL``. Tests build
``Settings`` directly instead of touching the environment.
"""

from __future__ import annotations

import math
import os
import re
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from supervisor.credentials import TokenError, parse_tokens
from workers import registry
from workers.limits import Limits
from workers.registry import Policy

DEFAULT_DATABASE_URL = "sqlite:///./data/jobsup.db"


LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
LOG_FORMATS = ("text", "json")


class SettingsError(ValueError):
    pass


def _instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    # jobsup worker's health port (/healthz, /readyz); 0: PORT's.
    health_port: int = 0
    database_url: str = DEFAULT_DATABASE_URL
    # 0: a web instance that accepts and serves jobs and runs none (workers do).
    max_concurrent_jobs: int = 4
    # Jobs waiting for a slot, across all instances; beyond it, starts get 429.
    max_pending_jobs: int = 10_000
    # Cancel escalation: Event, then SIGTERM after cancel_grace_s, then SIGKILL
    # after a further kill_after_s.
    cancel_grace_s: float = 5.0
    kill_after_s: float = 5.0
    # How long POST /cancel waits for the job to stop before answering 202.
    cancel_wait_s: float = 2.0
    # A job paused this long is cancelled (reason paused_timeout): it holds a slot.
    paused_timeout_s: float = 86400.0
    job_ttl_s: float = 3600.0
    cleanup_interval_s: float = 600.0
    job_modules: tuple[str, ...] = ()
    shutdown_grace_s: float = 25.0
    # At a shutdown, jobs of resumable types go back to the queue ("requeue")
    # to resume on the next instance, or are cancelled like the others ("cancel").
    shutdown_mode: str = "requeue"
    # A job interrupted (re-queued or rescued) more often than this fails.
    max_resumes: int = 10
    retention_days: float = 30.0
    # The claim's aging: a waiting job counts one priority point more per
    # this many seconds it has waited (store.jobs.queue_rank).
    priority_aging_s: float = 60.0
    # The most attempts a start's ``retry`` may ask for.
    max_attempts: int = 10
    # The most a start's ``limits`` may ask for (a job type's defaults above
    # them are lowered to them).
    max_timeout_s: float = 86400.0
    max_cpu_s: float = 86400.0
    max_memory_mib: int = 65536
    max_open_files: int = 65536
    # A start's idempotencyKey returns the job first accepted with it for this long.
    idempotency_ttl_s: float = 86400.0
    # An approval step (a removal plan's real run) not approved within this
    # long ends cancelled, reason "expired".
    plan_ttl_s: float = 7 * 86400.0
    progress_flush_s: float = 0.25
    # A job's captured output (stdout, stderr, ctx.log) kept per job, in
    # bytes; past it, its oldest lines are dropped (supervisor.joblog).
    job_log_bytes: int = 1024 * 1024
    # Many instances: heartbeat period, and silence after which an instance
    # is declared dead and its jobs rescued; how often to look for pending
    # jobs and cross-instance cancel requests when no NOTIFY arrives.
    heartbeat_s: float = 2.0
    node_timeout_s: float = 15.0
    poll_s: float = 1.0
    # After a SIGTERM reaches a child of ours unasked (a platform stopping
    # every process, or a hand), start no job for this long.
    sigterm_hold_s: float = 30.0
    # Keep one child forked and waiting, so a job starts without a fork.
    spare_child: bool = True
    # Jobs run at this nice level, below the API when both want the CPU.
    child_nice: int = 10
    # Slow and many clients: a request's headers and its body must each
    # arrive within these; past max_connections, a request gets 503.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1000
    # Event streams (SSE): events kept for Last-Event-ID resume; events
    # waiting per subscriber before it is dropped; the keep-alive comment's
    # period; the least time between two writes to one stream (progress in
    # between is coalesced); how often jobs another instance owns are read
    # from the store while someone follows them.
    events_buffer: int = 10_000
    events_queue: int = 1000
    events_keepalive_s: float = 15.0
    events_interval_s: float = 0.25
    events_follow_s: float = 1.0
    log_level: str = "info"
    # text (the default) or json: one JSON object per line.
    log_format: str = "text"
    access_log: bool = False
    # Access: bearer tokens ("role:token" or "name:role:token", comma-separated);
    # unset, an admin token is generated at first start. auth=False runs open.
    auth: bool = True
    tokens: str = field(default="", repr=False)
    # Host headers answered (against DNS rebinding); empty: the bind address,
    # localhost and 127.0.0.1. CORS headers only for the origins named here.
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    # Behind a reverse proxy: the peer and scheme from X-Forwarded-For/-Proto.
    trust_proxy: bool = False
    # Starts and cancels per credential: a token bucket; 0 per minute: no limit.
    rate_start_per_min: float = 60.0
    rate_burst: int = 20
    max_body_bytes: int = 1024 * 1024
    session_ttl_s: float = 12 * 3600.0
    # A bearer token that may read GET /metrics and nothing else ("" = none).
    metrics_token: str = ""
    # Notifications: each URL gets a signed POST for every job that ends
    # (supervisor.notify); retried with backoff for up to notify_retry_s.
    notify_urls: tuple[str, ...] = ()
    notify_secret: str = field(default="", repr=False)
    notify_retry_s: float = 86400.0
    instance_id: str = field(default_factory=_instance_id)
    # The rest of the environment: the job modules' own settings (their
    # ``workers.registry.Setting``s, JOBSUP_* or a variable they name), read
    # by ``policy()`` once they are loaded. Not in repr: it may hold secrets.
    job_env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = _env_name(f.name)
            if name in env and env[name] != "" and f.name != "job_env":
                values[f.name] = _parse(name, env[name], _PARSERS[f.name])
        known = {_env_name(f.name) for f in fields(cls)}
        values["job_env"] = {k: v for k, v in env.items() if k not in known}
        settings = cls(**values)
        settings.validate()
        return settings

    def policy(self) -> Policy:
        """The loaded job modules' settings; SettingsError naming a bad variable."""
        try:
            return registry.policy(self.job_env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None

    def validate(self) -> None:
        positive = (
            "max_pending_jobs",
            "job_ttl_s",
            "cleanup_interval_s",
            "progress_flush_s",
            "paused_timeout_s",
            "job_log_bytes",
            "heartbeat_s",
            "node_timeout_s",
            "poll_s",
            "priority_aging_s",
            "max_attempts",
            "idempotency_ttl_s",
            "plan_ttl_s",
            "max_timeout_s",
            "max_cpu_s",
            "max_memory_mib",
            "max_open_files",
            "header_timeout_s",
            "body_timeout_s",
            "max_connections",
            "max_body_bytes",
            "session_ttl_s",
            "events_buffer",
            "events_queue",
            "events_keepalive_s",
            "events_follow_s",
            "notify_retry_s",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"{_env_name(name)} must be positive")
        non_negative = (
            "max_concurrent_jobs",
            "cancel_grace_s",
            "kill_after_s",
            "cancel_wait_s",
            "shutdown_grace_s",
            "retention_days",
            "sigterm_hold_s",
            "rate_start_per_min",
            "events_interval_s",
            "max_resumes",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise SettingsError(f"{_env_name(name)} must not be negative")
        if not 1 <= self.port <= 65535:
            raise SettingsError(f"PORT must be 1 to 65535, not {self.port}")
        if not 0 <= self.health_port <= 65535:
            raise SettingsError(f"JOBSUP_HEALTH_PORT must be 0 to 65535, not {self.health_port}")
        if self.max_concurrent_jobs == 0 and self.database_url.startswith("sqlite:///"):
            raise SettingsError(
                "JOBSUP_MAX_CONCURRENT_JOBS=0 runs no job here: it is for a web instance"
                " beside jobsup worker instances, which need PostgreSQL (DATABASE_URL)"
            )
        if self.node_timeout_s < 2 * self.heartbeat_s:
            raise SettingsError(
                "JOBSUP_NODE_TIMEOUT_S must be at least twice JOBSUP_HEARTBEAT_S, or live "
                "instances would be declared dead"
            )
        if not 0 <= self.child_nice <= 19:
            raise SettingsError("JOBSUP_CHILD_NICE must be 0 to 19: jobs never outrank the API")
        if self.shutdown_mode not in ("requeue", "cancel"):
            raise SettingsError("JOBSUP_SHUTDOWN_MODE must be requeue or cancel")
        if self.log_level.lower() not in LOG_LEVELS:
            raise SettingsError(f"JOBSUP_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if self.rate_start_per_min > 0 and self.rate_burst < 1:
            raise SettingsError("JOBSUP_RATE_BURST must be at least 1 while a rate is set")
        try:
            parse_tokens(self.tokens)
        except TokenError as exc:
            raise SettingsError(str(exc)) from None
        for origin in self.cors_origins:
            if not _ORIGIN.fullmatch(origin):
                raise SettingsError(
                    f"JOBSUP_CORS_ORIGINS: {origin[:100]!r} is not an origin"
                    " (scheme://host[:port], no path, no wildcard)"
                )
        for host in self.allowed_hosts:
            if "*" in host[1:] or (host.startswith("*") and not host.startswith("*.")):
                raise SettingsError(
                    f"JOBSUP_ALLOWED_HOSTS: {host[:100]!r}: a wildcard is only '*.domain' or '*'"
                )
        if self.log_format not in LOG_FORMATS:
            raise SettingsError(f"JOBSUP_LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}")
        if self.metrics_token and len(self.metrics_token) < 16:
            raise SettingsError("JOBSUP_METRICS_TOKEN must be at least 16 characters")
        self._validate_notify()
        if not self.database_url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise SettingsError("DATABASE_URL must start with sqlite:/// or postgresql://")

    def _validate_notify(self) -> None:
        for url in self.notify_urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SettingsError(
                    f"JOBSUP_NOTIFY_URLS: {redact_url(url)[:200]!r} is not an http:// or"
                    " https:// URL with a host"
                )
        if self.notify_urls and len(self.notify_secret) < 16:
            raise SettingsError(
                "JOBSUP_NOTIFY_SECRET must be set (16 characters or more) when"
                " JOBSUP_NOTIFY_URLS is: every notification is signed with it"
            )

    def limit_caps(self) -> Limits:
        """The caps on a job's limits (JOBSUP_MAX_TIMEOUT_S and its siblings)."""
        return Limits(self.max_timeout_s, self.max_cpu_s, self.max_memory_mib, self.max_open_files)

    def host_names(self) -> tuple[str, ...]:
        """The Host headers answered: JOBSUP_ALLOWED_HOSTS, or the bind address and loopback."""
        return self.allowed_hosts or (self.host, "localhost", "127.0.0.1", "::1")


def redact_url(url: str) -> str:
    """``url`` without the password of its user part, for messages and listings."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-\[\]:]+")


def env_names() -> list[str]:
    """Every variable ``Settings`` reads (job modules add their own ``JOBSUP_*``)."""
    return [_env_name(f.name) for f in fields(Settings) if f.name != "job_env"]


def _env_name(field_name: str) -> str:
    if field_name in ("port", "database_url"):
        return field_name.upper()
    return "JOBSUP_" + field_name.upper()


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _modules(value: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in value.split(",") if m.strip())


def _finite(value: str) -> float:
    """A number of seconds (or a rate): nan and inf pass every bound check, so none is one."""
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


_SCALARS: dict[str, Callable[[str], Any]] = {
    "int": int,
    "float": _finite,
    "str": str,
    "bool": _bool,
}
_PARSERS: dict[str, Callable[[str], Any]] = {
    f.name: _SCALARS.get(str(f.type), _modules) for f in fields(Settings)
}


def _parse(name: str, raw: str, parser: Callable[[str], Any]) -> Any:
    try:
        return parser(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not valid: {exc}") from None
