"""Who may call each route: one declaration per endpoint, read at the edge.

Every endpoint declares the least role it needs with ``@needs(Role.X)``, or
``@public`` for the few routes anyone may reach. An endpoint that declares
nothing needs ``admin``: a route someone forgot to mark is closed, not open.

Two more declarations, read by the same edge (``supervisor.api.guard``):
``@audited("group.put", target="groupWaId")`` records every call in the
audit trail (who, from where, the path parameter named as its target, the
status answered), and ``@limited`` counts every call against the caller's
start-and-cancel rate limit.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__jobsup_role__"
_AUDIT = "__jobsup_audit__"
_LIMITED = "__jobsup_limited__"


class Role(IntEnum):
    """Ordered: each role may do everything the ones below it may."""

    PUBLIC = 0
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


def needs(role: Role) -> Callable[[F], F]:
    def mark(endpoint: F) -> F:
        setattr(endpoint, _ATTRIBUTE, role)
        return endpoint

    return mark


def public(endpoint: F) -> F:
    return needs(Role.PUBLIC)(endpoint)


def role_of(endpoint: Callable[..., Any]) -> Role:
    return getattr(endpoint, _ATTRIBUTE, Role.ADMIN)


@dataclass(frozen=True)
class Audited:
    action: str  # "job.start", "group.put", ...
    target: str | None  # the path parameter the action is on


def audited(action: str, target: str | None = None) -> Callable[[F], F]:
    def mark(endpoint: F) -> F:
        setattr(endpoint, _AUDIT, Audited(action, target))
        return endpoint

    return mark


def audit_of(endpoint: Callable[..., Any]) -> Audited | None:
    return getattr(endpoint, _AUDIT, None)


def limited(endpoint: F) -> F:
    setattr(endpoint, _LIMITED, True)
    return endpoint


def is_limited(endpoint: Callable[..., Any]) -> bool:
    return getattr(endpoint, _LIMITED, False)
