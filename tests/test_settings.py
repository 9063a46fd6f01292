"""Settings come from the environment, read once, and bad values name their variable."""

from __future__ import annotations

import pytest

from supervisor.settings import Settings, SettingsError
from workers import registry


def test_defaults_and_overrides() -> None:
    settings = Settings.from_env({"PORT": "9000", "JOBSUP_JOB_MODULES": "a.jobs, b.jobs"})
    assert settings.port == 9000
    assert settings.job_modules == ("a.jobs", "b.jobs")
    assert settings.database_url == "sqlite:///./data/jobsup.db"
    assert settings.max_concurrent_jobs == 4
    registry.load(())
    assert settings.policy().min_delay_ms == 10_000


PG = "postgresql://postgres@127.0.0.1:5432/jobsup"


def test_a_web_instance_may_run_no_job_on_postgresql() -> None:
    settings = Settings.from_env({"JOBSUP_MAX_CONCURRENT_JOBS": "0", "DATABASE_URL": PG})
    assert settings.max_concurrent_jobs == 0
    assert settings.health_port == 0
    assert Settings.from_env({"JOBSUP_HEALTH_PORT": "9001"}).health_port == 9001


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"JOBSUP_MAX_CONCURRENT_JOBS": "many"}, "JOBSUP_MAX_CONCURRENT_JOBS"),
        ({"JOBSUP_MAX_CONCURRENT_JOBS": "0"}, "JOBSUP_MAX_CONCURRENT_JOBS"),  # on SQLite
        ({"JOBSUP_MAX_CONCURRENT_JOBS": "-1", "DATABASE_URL": PG}, "JOBSUP_MAX_CONCURRENT_JOBS"),
        ({"JOBSUP_HEALTH_PORT": "70000"}, "JOBSUP_HEALTH_PORT"),
        ({"JOBSUP_CANCEL_GRACE_S": "-1"}, "JOBSUP_CANCEL_GRACE_S"),
        ({"JOBSUP_ACCESS_LOG": "maybe"}, "JOBSUP_ACCESS_LOG"),
        ({"JOBSUP_CHILD_NICE": "-5"}, "JOBSUP_CHILD_NICE"),
        ({"JOBSUP_POLL_S": "0"}, "JOBSUP_POLL_S"),
        ({"JOBSUP_HEARTBEAT_S": "-1"}, "JOBSUP_HEARTBEAT_S"),
        ({"JOBSUP_LOG_LEVEL": "trace"}, "JOBSUP_LOG_LEVEL"),
        ({"JOBSUP_HEARTBEAT_S": "10", "JOBSUP_NODE_TIMEOUT_S": "15"}, "JOBSUP_NODE_TIMEOUT_S"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        # nan and inf pass every "> 0" check: the server then failed at its
        # startup (JOBSUP_NOTIFY_RETRY_S) or at a start's expiry (PLAN_TTL_S).
        ({"JOBSUP_NOTIFY_RETRY_S": "nan"}, "JOBSUP_NOTIFY_RETRY_S"),
        ({"JOBSUP_PLAN_TTL_S": "inf"}, "JOBSUP_PLAN_TTL_S"),
        ({"JOBSUP_PAUSED_TIMEOUT_S": "nan"}, "JOBSUP_PAUSED_TIMEOUT_S"),
        ({"JOBSUP_MAX_TIMEOUT_S": "inf"}, "JOBSUP_MAX_TIMEOUT_S"),
    ],
)
def test_bad_values_name_their_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        Settings.from_env(env)
