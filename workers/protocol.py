"""Messages a child sends its parent over the progress pipe.

Each message is one msgpack frame (``Connection.send_bytes`` framing). Errors
carry formatted traceback text, never live exception objects.
"""

from __future__ import annotations

import struct
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


ProgressFields = list[int | str | None]  # processed, total, message, phase


def merge_progress(new: ProgressFields, old: ProgressFields | None) -> ProgressFields:
    """Progress is a value, not a stream: each field left None keeps its old value.

    The one rule for it, wherever progress is folded: in the child between
    sends, in the parent within one read, and into the job itself.
    """
    if old is None:
        return list(new)
    return [n if n is not None else o for n, o in zip(new, old, strict=True)]


class Partial(_Frame, tag="partial"):
    result: Any


class Saved(_Frame, tag="saved"):
    """The job's saved place (``ctx.save``), as JSON: the latest one wins."""

    state_json: bytes


class Paused(_Frame, tag="paused"):
    """The job holds at a context call, as asked (a pause byte on the cancel pipe)."""

    at: float


class Log(_Frame, tag="log"):
    level: str
    message: str


class Usage(_Frame, tag="usage"):
    """What the child used, sent just before its final message (forensics).

    ``getrusage`` of the child itself plus its reaped children; the exit
    code it is about to exit with.
    """

    exit_code: int
    user_cpu_s: float
    system_cpu_s: float
    peak_rss_kib: int


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
    # The job's ``error.reason``: an exception it raised, or a limit it hit
    # (memory_limit, cpu_limit: workers.limits).
    reason: str = "exception"


class Swept(_Frame, tag="swept"):
    """Sent before the final frame: descendants the job left alive, killed at its end."""

    killed: int


Message = (
    Started | Progress | Partial | Saved | Paused | Log | Swept | Usage | Done | Cancelled | Failed
)

encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(Message)

# Exit codes of a child, read together with its last message by
# ``supervisor.state.classify_exit``.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 3

# The bytes the supervisor writes on a child's cancel pipe (EOF: it is gone).
CANCEL = b"c"
PAUSE = b"p"
RESUME = b"r"
# A limit hit where the final frame could not be sent (no memory left to build it).
EXIT_MEMORY = 4

# What the forkserver writes after a child's exit code on its status pipe
# (workers.forkserver_init): peak RSS in KiB, user and system CPU in microseconds.
EXIT_USAGE = struct.Struct("!qqq")
