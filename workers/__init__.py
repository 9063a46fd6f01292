"""The child runtime, and the one module job-type authors import from.

Everything a job type needs is here::

    from workers import ConfigRejected, Database, JobConfig, JobContext, Policy, job_type

plus ``JobCancelled`` (raised at a cancel point), ``SavedStateTooLarge``
(``ctx.save`` given too much), ``Retry`` (a retry policy), ``Limits`` (what a
type's jobs may use), ``Setting`` and ``Label``
and ``extend`` (what a module contributes beyond its job types). The older
paths (``workers.registry``, ``workers.context``, ``workers.db``) import the
same names.

The package is generic: the child's entry point and its context, the pipe
protocol, the registry, the database interface, the fence. Job types live
in their own packages (the removal domain in ``removal``). It never imports
the web layer (``supervisor``); the supervisor imports the registry from here.
"""

from workers.context import JobCancelled, JobContext, SavedStateTooLarge
from workers.db import Database
from workers.limits import Limits
from workers.registry import (
    ConfigRejected,
    JobConfig,
    Label,
    Policy,
    Retry,
    Setting,
    extend,
    job_type,
)

__all__ = [
    "ConfigRejected",
    "Database",
    "JobCancelled",
    "JobConfig",
    "JobContext",
    "Label",
    "Limits",
    "Policy",
    "Retry",
    "SavedStateTooLarge",
    "Setting",
    "extend",
    "job_type",
]
