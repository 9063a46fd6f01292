"""A lean keep-alive HTTP/1.1 client (stdlib ``http.client``) for the timed requests.

The latencies the figures time include the client's own work. httpx costs
about 0.8 ms more per request than ``http.client`` on the 2-core machine,
more than the baselines' Redis client, so the timed requests use this one.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

# Errors that mean the keep-alive connection was closed before the request
# reached the server (uvicorn closes idle ones after 5 s): safe to resend.
_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class HttpError(Exception):
    pass


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def raise_for_status(self) -> None:
        if self.status >= 400:
            raise HttpError(f"HTTP {self.status}: {self.body[:300]!r}")


class Client:
    def __init__(
        self, host: str, port: int, timeout: float = 30, headers: dict[str, str] | None = None
    ) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._headers = dict(headers or {})  # sent with every request (the token)

    def request(
        self, method: str, path: str, params: dict[str, Any] | None = None, body: Any = None
    ) -> Response:
        url = f"{path}?{urlencode(params)}" if params else path
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        headers = dict(self._headers)
        if data is not None:
            headers["content-type"] = "application/json"
        for attempt in range(2):
            try:
                self._conn.request(method, url, data, headers)
                answer = self._conn.getresponse()
                received = {k.lower(): v for k, v in answer.getheaders()}
                return Response(answer.status, received, answer.read())
            except _STALE:
                self._conn.close()
                if attempt:
                    raise
            except (OSError, http.client.HTTPException):
                self._conn.close()
                raise
        raise AssertionError("unreachable")

    def get(self, path: str, params: dict[str, Any] | None = None) -> Response:
        return self.request("GET", path, params)

    def post(self, path: str, body: Any = None) -> Response:
        return self.request("POST", path, body=body)

    def close(self) -> None:
        self._conn.close()
