"""Bytes to a typed value: msgspec's errors become ``Invalid`` naming the field."""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec

from supervisor.errors import Invalid, MalformedJson

T = TypeVar("T")

_AT_PATH = re.compile(r" - at `\$\.?([^`]*)`$")


# Whole floats up to this size spell their integer exactly.
_EXACT = 2**53


def decode(body: bytes, type_: type[T]) -> T:
    try:
        return msgspec.json.decode(body, type=type_)
    except msgspec.ValidationError as exc:
        # JSON Schema (and so the OpenAPI document) counts ``2.0`` as the
        # integer 2: a body refused for a float where an int belongs is read
        # again with its whole floats as integers. Any other refusal is
        # reported as it is (a second reading cannot rebuild raw fields).
        if not str(exc).startswith("Expected `int`, got `float`"):
            raise from_validation(exc) from None
        try:
            value = msgspec.json.decode(body)
            return msgspec.convert(_whole_floats_as_ints(value), type=type_)
        except msgspec.ValidationError as again:
            # A raw field (kept as JSON text) cannot be rebuilt from a value.
            raw = str(again).startswith("Expected `raw`")
            raise from_validation(exc if raw else again) from None
        except (msgspec.DecodeError, RecursionError):
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


def _whole_floats_as_ints(value: Any) -> Any:
    """``value`` with every whole float (``2.0``) an int; iterative, for any depth."""
    if isinstance(value, float):
        return int(value) if value.is_integer() and abs(value) <= _EXACT else value
    if not isinstance(value, dict | list):
        return value
    root: list[Any] = [value]
    stack: list[dict[str, Any] | list[Any]] = [value]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, item in list(items):
            if isinstance(item, float) and item.is_integer() and abs(item) <= _EXACT:
                node[key] = int(item)  # type: ignore[index]
            elif isinstance(item, dict | list):
                stack.append(item)
    return root[0]
