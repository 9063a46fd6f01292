"""Messages a child sends its parent over the progress pipe.

Each message is one msgpack frame (``Connection.send_bytes`` framing). Errors
carry formatted traceback text, never live exception objects.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Started(msgspec.Struct, tag="started"):
    pid: int
    at: float


class Progress(msgspec.Struct, tag="progress"):
    processed: int | None = None
    total: int | None = None
    message: str | None = None
    phase: str | None = None


class Partial(msgspec.Struct, tag="partial"):
    result: Any


class Log(msgspec.Struct, tag="log"):
    level: str
    message: str


class Done(msgspec.Struct, tag="done"):
    result: Any


class Cancelled(msgspec.Struct, tag="cancelled"):
    """The job saw its cancel request and stopped; ``result`` is what it did."""

    result: Any
    by_signal: bool = False


class Failed(msgspec.Struct, tag="failed"):
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
EXIT_ORPHANED = 4
