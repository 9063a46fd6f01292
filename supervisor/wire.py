"""The JSON answers and events are sent as: every time in the one text form.

msgspec writes a time with no fraction, or with six digits. Answers (and
anything else sent to clients, such as events) go through ``encode``, which
first puts every time into ``workers.times.iso``'s form, with milliseconds
always present.
"""

from __future__ import annotations

import functools
import typing
from datetime import datetime
from typing import Any

import msgspec

from workers.times import iso

_encoder = msgspec.json.Encoder()


def encode(value: Any) -> bytes:
    return _encoder.encode(wire(value))


def _holds_times(value: Any) -> bool:
    if isinstance(value, list):
        value = value[0] if value else None
    return isinstance(value, datetime | msgspec.Struct)


@functools.cache
def _walked(cls: type) -> tuple[str, ...]:
    """The fields of a struct class whose type lets them hold a time; the rest are skipped.

    Every answer goes through here (a status GET is mostly this), so a job's
    thirty fields are not looked at one by one when a dozen can hold a time.
    """
    return tuple(f.name for f in msgspec.structs.fields(cls) if _may_hold(f.type))


def _may_hold(kind: Any) -> bool:
    if kind is Any:
        return True
    if isinstance(kind, type) and not typing.get_args(kind):
        if issubclass(kind, msgspec.Struct):
            return bool(_walked(kind))  # a struct with no time in it is left as it is
        return issubclass(kind, datetime)
    return any(_may_hold(arg) for arg in typing.get_args(kind))


def _field(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, msgspec.Struct):
        changes = {
            name: _field(v)
            for name in _walked(type(value))
            if _holds_times(v := getattr(value, name))
        }
        return msgspec.structs.replace(value, **changes) if changes else value
    if _holds_times(value):
        return [_field(item) for item in value]
    return value


def wire(value: Any) -> Any:
    """The value with its times as text, ready to encode.

    Times are replaced in the structs (and lists of structs) an answer is
    made of, and in the top level of a dict a handler builds. A job's result
    and config are the job's own JSON and hold no time objects: they are not
    walked, so a large result costs nothing here.
    """
    if isinstance(value, dict):
        return {key: _field(item) for key, item in value.items()}
    return _field(value)
