"""Which route the router will pick for a request, found once and used twice.

The access guard must know the endpoint before the request reaches the
router (its role, its audit action). ``first_match`` picks it as the
router does (the first full match, else the first partial one, into
mounts), and ``reuse_matches`` lets the router take that match from the
scope instead of looping over the routes again.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.types import Receive, Scope, Send

MATCHED = "jobsup.matched"  # the route and its child scope, for reuse_matches


def first_match(routes: list[BaseRoute], scope: Scope) -> tuple[BaseRoute, Match, Scope] | None:
    """The route the router picks: the first full match, else the first partial one."""
    partial: tuple[BaseRoute, Match, Scope] | None = None
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            return route, match, child
        if match is Match.PARTIAL and partial is None:
            partial = (route, match, child)
    return partial


def endpoint_of(route: BaseRoute, child: Scope, scope: Scope) -> tuple[Any, Scope] | None:
    if isinstance(route, Mount) and route.routes:
        inner_scope = {**scope, **child}
        inner = first_match(route.routes, inner_scope)
        return None if inner is None else endpoint_of(inner[0], inner[2], inner_scope)
    return child.get("endpoint", getattr(route, "app", None)), child


def reuse_matches(router: Router) -> None:
    """Let the router take the route the guard matched instead of matching again.

    Matching costs about as much as the rest of a simple request; done twice
    it would be the guard's main cost. ``Guard`` leaves a full match in the
    scope; the router's entry takes it from there, as its own loop would.
    A router with middleware of its own is left alone.
    """
    if router.middleware_stack != router.app:
        return
    match_again = router.middleware_stack

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        found = scope.pop(MATCHED, None)
        if found is None:
            await match_again(scope, receive, send)
            return
        route, child = found
        scope.setdefault("router", router)
        scope["route"] = route
        scope.update(child)
        await route.handle(scope, receive, send)

    router.middleware_stack = app
