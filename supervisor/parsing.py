"""Bytes to a typed value: msgspec's errors become ``Invalid`` naming the field."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from supervisor.errors import Invalid, MalformedJson

T = TypeVar("T")

_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


def decode(body: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        raise from_validation(exc) from None
    except msgspec.DecodeError as exc:
        raise MalformedJson(_malformed(str(exc))) from None
    except RecursionError:
        raise MalformedJson("JSON nested too deeply") from None


def _malformed(text: str) -> str:
    """``malformed JSON: trailing comma in array (byte 3)``, said once."""
    detail = text.removeprefix("JSON is malformed: ")
    return f"malformed JSON: {detail[:1].lower()}{detail[1:]}"


def from_validation(exc: msgspec.ValidationError) -> Invalid:
    """msgspec says ``Expected `int`, got `str` - at `$.batchSize```: name the field."""
    text = str(exc)
    field = None
    match = _AT_PATH.search(text)
    if match:
        field = match.group(1) or None
        text = text[: match.start()]
    missing = re.match(r"Object missing required field `([^`]+)`", text)
    unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
    if missing or unknown:
        name = (missing or unknown).group(1)  # type: ignore[union-attr]
        field = f"{field}.{name}" if field else name
        text = "required field missing" if missing else "unknown field"
    return Invalid(f"{field}: {text}" if field else text, field)
