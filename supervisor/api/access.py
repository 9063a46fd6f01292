"""Who may call each route: one declaration per endpoint, read at the edge.

Every endpoint declares the least role it needs with ``@needs(Role.X)``, or
``@public`` for the few routes anyone may reach. An endpoint that declares
nothing needs ``admin``: a route someone forgot to mark is closed, not open.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_ATTRIBUTE = "__jobsup_role__"


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
