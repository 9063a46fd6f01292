"""Messages a child sends its parent over the progress pipe.

Each message is one msgpack frame (``Connection.send_bytes`` framing). Errors
carry formatted traceback text, never live exception objects.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Frame(msgspec.Struct, tag_field="kind", array_like=True):
    """Encoded as a compact array whose first item is the message's tag."""


class Started(_Frame, tag="started"):
    pid: int
    at: float


class Progress(_Frame, tag="progress"):
    processed: int | None = None
    total: int | None = None
    message: str | None = None
    phase: str | None = None


class Partial(_Frame, tag="partial"):
    result: Any


class Log(_Frame, tag="log"):
    level: str
    message: str


class Done(_Frame, tag="done"):
    result: Any


class Cancelled(_Frame, tag="cancelled"):
    """The job saw its cancel request and stopped; ``result`` is what it did."""

    result: Any
    by_signal: bool = False


class Failed(_Frame, tag="failed"):
    type: str
    message: str
    traceback: str


Message = Started | Progress | Partial | Log | Done | Cancelled | Failed

encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(Message)

# Exit codes of a child, read together with its last message by
# ``supervisor.state.classify_exit``.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 3
