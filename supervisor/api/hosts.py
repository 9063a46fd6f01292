"""Which Host headers are answered, against DNS rebinding.

Starlette's ``TrustedHostMiddleware`` decides; a refused host gets 400 in
the API's error envelope instead of its plain text. The health probes
(``/healthz``, ``/readyz``) answer any host: a platform's prober often
calls them by the instance's own address, and they hold nothing private.
"""

from __future__ import annotations

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.api.errors import error_response

PROBES = frozenset({"/healthz", "/readyz"})
_PASSED = "jobsup.host_ok"


async def _discard(message: Message) -> None:
    pass


class TrustedHosts:
    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...]) -> None:
        self.app = app
        self._check = TrustedHostMiddleware(self._passed, list(allowed_hosts), www_redirect=False)

    @staticmethod
    async def _passed(scope: Scope, receive: Receive, send: Send) -> None:
        scope[_PASSED] = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in PROBES:
            await self.app(scope, receive, send)
            return
        await self._check(scope, receive, _discard)  # its own answer to a bad host is dropped
        if scope.pop(_PASSED, False):
            await self.app(scope, receive, send)
            return
        response = error_response(400, "invalid_host", "the Host header names no host served here")
        await response(scope, receive, send)
