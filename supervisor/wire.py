"""The JSON answers and events are sent as: every time in the one text form.

msgspec writes a time with no fraction, or with six digits. Answers (and
anything else sent to clients, such as events) go through ``encode``, which
first puts every time into ``workers.times.iso``'s form, with milliseconds
always present.
"""

from __future__ import annotations

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


def _field(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, msgspec.Struct):
        changes = {
            name: _field(v)
            for name in value.__struct_fields__
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
