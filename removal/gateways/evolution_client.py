"""An Evolution API v2 client: the calls the removal jobs make, their faults, their retries.

Every call has a timeout (``EVOLUTION_TIMEOUT_S``) and sends the key as the
``apikey`` header, which nothing here ever logs or quotes. An answer is
turned into data or into a ``GatewayError`` that says, for a person, what
went wrong (``classify``). Faults that pass (429, 5xx, connection errors,
timeouts, WhatsApp's ``rate-overlimit``) are retried with exponential
backoff and jitter, bounded, through the caller's ``sleep`` (a job's
cancellable wait, so a cancel ends a wait at once).

What Evolution really sends is described in the project's reference notes:
errors are ``{"status", "error", "response": {"message": Any}}``, where the
message may be a string, a list, a nested list or a list of objects.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from removal.gateways import GatewayError
from workers.registry import Secret

# Retry-After is honoured up to this; beyond it, our own backoff cap.
MAX_WAIT_S = 300.0


@dataclass(frozen=True, slots=True)
class EvolutionSettings:
    url: str
    key: Secret
    instance: str
    timeout_s: float
    backoff_s: float  # the first retry's wait; doubled each time, with jitter
    retries: int  # retries after the first attempt

    def backoff(self, retry: int, retry_after: float | None = None) -> float:
        """The wait before retry number ``retry`` (1, 2, …): exponential, jittered, bounded."""
        if retry_after is not None:
            return min(retry_after, MAX_WAIT_S)
        ceiling = min(self.backoff_s * 2 ** (retry - 1), MAX_WAIT_S)
        return ceiling / 2 + random.uniform(0, ceiling / 2)  # jitter, not crypto


def flatten(message: Any) -> str:
    """Evolution's ``response.message``, whatever its shape, as one line of text."""
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        if "message" in message:
            prop = message.get("property")
            return f"{prop}: {flatten(message['message'])}" if prop else flatten(message["message"])
        return "; ".join(f"{k}: {flatten(v)}" for k, v in message.items())
    if isinstance(message, list):
        return "; ".join(flatten(item) for item in message)
    return "" if message is None else str(message)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict) and isinstance(body.get("response"), dict):
        return flatten(body["response"].get("message"))[:500]
    return flatten(body)[:500]


def classify(
    status: int, text: str, *, instance: str, group: str | None, mutating: bool
) -> GatewayError:
    """What an error answer means for us: whose problem, and whether to retry."""
    lower = text.lower()
    if status == 401:
        return GatewayError(
            "Evolution API rejected the key (401 Unauthorized): check EVOLUTION_API_KEY",
            GatewayError.UNAVAILABLE,
        )
    if status == 403:
        return GatewayError(
            f"Evolution API refused access (403 Forbidden): {text}", GatewayError.UNAVAILABLE
        )
    if status == 429 or "rate-overlimit" in lower:
        return GatewayError(
            "WhatsApp rate limit (rate-overlimit)"
            if status != 429
            else "Evolution API: 429 Too Many Requests",
            GatewayError.UNAVAILABLE,
            transient=True,
        )
    if status >= 500:
        return GatewayError(
            f"Evolution API error {status}: {text}",
            GatewayError.UNAVAILABLE,
            transient=True,
            unsure=mutating,
        )
    if "instance does not exist" in lower:
        return GatewayError(
            f"Evolution API has no instance {instance!r} (EVOLUTION_INSTANCE)",
            GatewayError.UNAVAILABLE,
        )
    if "item-not-found" in lower:
        return GatewayError(f"WhatsApp has no group {group!r}", GatewayError.NO_GROUP)
    if "not-authorized" in lower or "forbidden" in lower:
        return GatewayError(
            f"this WhatsApp account may not change group {group!r}: it is not an admin"
            f" (or not a member) of it ({text})",
            GatewayError.FORBIDDEN,
        )
    if "connection closed" in lower or "timed out" in lower:
        return GatewayError(
            f"the WhatsApp connection failed ({text})",
            GatewayError.UNAVAILABLE,
            transient=True,
            unsure=mutating and "timed out" in lower,
        )
    return GatewayError(f"Evolution API answered {status}: {text}", GatewayError.REJECTED)


class EvolutionClient:
    """One Evolution instance's HTTP API; ``close`` when done."""

    def __init__(
        self,
        settings: EvolutionSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._instance = quote(settings.instance, safe="")  # a path segment, whatever it holds
        self._sleep = sleep
        self._log = log or (lambda message: None)
        self._http = httpx.Client(
            base_url=settings.url,
            timeout=settings.timeout_s,
            headers={"apikey": settings.key.value},
        )

    def close(self) -> None:
        self._http.close()

    def connection_state(self) -> str | None:
        """``open``, ``connecting``, ``close``, or None when Evolution does not say. No retry."""
        body = self._single("GET", f"/instance/connectionState/{self._instance}")
        instance = body.get("instance") if isinstance(body, dict) else None
        state = instance.get("state") if isinstance(instance, dict) else None
        return state if isinstance(state, str) else None

    def participants(self, group: str, *, retry: bool = True) -> list[dict[str, Any]]:
        path = f"/group/participants/{self._instance}"
        params = {"groupJid": group}
        if retry:
            body = self._retrying("GET", path, params, None, group)
        else:
            body = self._single("GET", path, params, group=group)
        listed = body.get("participants") if isinstance(body, dict) else None
        if not isinstance(listed, list):
            raise GatewayError(
                "Evolution API answered participants without a list", GatewayError.REJECTED
            )
        return [p for p in listed if isinstance(p, dict) and isinstance(p.get("id"), str)]

    def remove(self, group: str, participants: list[str]) -> list[dict[str, Any]]:
        """The per-participant answers of one ``remove``: ``[{status, jid, content}]``."""
        body = self._retrying(
            "POST",
            f"/group/updateParticipant/{self._instance}",
            {"groupJid": group},
            {"action": "remove", "participants": participants},
            group,
        )
        answers = body.get("updateParticipants") if isinstance(body, dict) else None
        return [a for a in answers if isinstance(a, dict)] if isinstance(answers, list) else []

    def _retrying(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        json: Any,
        group: str | None,
    ) -> Any:
        unsure = False  # an earlier attempt may have done it: the outcome stays unsure
        for retry in range(self.settings.retries + 1):
            try:
                return self._once(method, path, params, json, group=group)
            except _Retryable as fault:
                error = fault.error
                unsure = unsure or error.unsure
                if retry == self.settings.retries:
                    raise GatewayError(
                        f"{error.reason} (gave up after {retry + 1} attempts)",
                        error.kind,
                        transient=True,
                        unsure=unsure,
                    ) from None
                wait = self.settings.backoff(retry + 1, fault.retry_after)
                self._log(
                    f"{error.reason}; retrying in {wait:.1f} s"
                    f" (attempt {retry + 2} of {self.settings.retries + 1})"
                )
                self._sleep(wait)
        raise AssertionError("unreachable")

    def _single(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self._once(*args, **kwargs)
        except _Retryable as fault:
            raise fault.error from None

    def _once(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        json: Any = None,
        *,
        group: str | None = None,
    ) -> Any:
        mutating = method != "GET"
        try:
            response = self._http.request(method, path, params=params, json=json)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise _Retryable(
                GatewayError(
                    f"cannot reach the Evolution API at {self.settings.url} ({type(exc).__name__})",
                    GatewayError.UNAVAILABLE,
                    transient=True,
                )
            ) from None
        except httpx.TimeoutException:
            raise _Retryable(
                GatewayError(
                    f"no answer from the Evolution API within {self.settings.timeout_s:g} s",
                    GatewayError.UNAVAILABLE,
                    transient=True,
                    unsure=mutating,
                )
            ) from None
        except httpx.TransportError as exc:
            raise _Retryable(
                GatewayError(
                    f"the connection to the Evolution API failed ({type(exc).__name__})",
                    GatewayError.UNAVAILABLE,
                    transient=True,
                    unsure=mutating,
                )
            ) from None
        if response.status_code < 300:
            try:
                return response.json()
            except ValueError:
                raise GatewayError(
                    f"Evolution API answered {response.status_code} without JSON",
                    GatewayError.REJECTED,
                ) from None
        error = classify(
            response.status_code,
            _message(response),
            instance=self.settings.instance,
            group=group,
            mutating=mutating,
        )
        if error.transient:
            raise _Retryable(error, _retry_after(response))
        raise error


class _Retryable(Exception):
    def __init__(self, error: GatewayError, retry_after: float | None = None) -> None:
        super().__init__(error.reason)
        self.error = error
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(raw)) if raw else None
    except ValueError:
        return None  # an HTTP date: our own backoff will do
