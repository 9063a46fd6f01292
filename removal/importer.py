"""``jobsup import members|activity FILE``: load a directory export through the HTTP API.

The file is CSV (a header row naming the columns), a JSON array of
objects, or JSON Lines (one object per line):

- members (``--group G``): ``whatsappId``, ``isAdmin`` (default false),
  ``joinedAt``, ``lastActiveAt`` (optional), ``altId`` (optional, the
  member's other WhatsApp id);
- activity: ``whatsappId``, ``groupWaId``, ``lastActiveAt``.

Times are ISO 8601 with a zone (``2025-10-21T11:40:39Z``). Every row is
checked here first; a bad one is reported as ``FILE:LINE: field: message``
and the others still load. Good rows go to the server in batches of
``BATCH`` rows, each batch one transaction (``POST
/admin/groups/{G}/members/import``, ``POST /admin/activity/import``): an
import cut short leaves whole batches loaded and nothing half-written, and
loading the same file again is harmless (a time never moves backwards).

Exit status: 0 all rows loaded, 1 some rows rejected, 2 the import could
not run or finish (file unreadable, server refused or unreachable).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import msgspec

from removal.activity import ActivityImport, MemberImport
from removal.directory.shapes import in_range
from supervisor.parsing import from_validation

BATCH = 500
EPILOG = (
    "Bad rows are reported as FILE:LINE: message; the others load, in batches of "
    f"{BATCH} rows, each one transaction. Exit status: 0 all rows loaded, 1 some "
    "rows rejected, 2 the import could not run or finish. See docs/operations.md."
)
DEFAULT_URL = "http://127.0.0.1:8000"
_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n", ""}


@dataclass(frozen=True)
class Kind:
    """What one import subcommand reads and where it sends it."""

    row_type: type[Any]
    required: tuple[str, ...]
    optional: tuple[str, ...]
    list_name: str
    times: tuple[str, ...]


MEMBERS = Kind(
    MemberImport,
    ("whatsappId", "joinedAt"),
    ("isAdmin", "lastActiveAt", "altId"),
    "members",
    ("joinedAt", "lastActiveAt"),
)
ACTIVITY = Kind(
    ActivityImport,
    ("whatsappId", "groupWaId", "lastActiveAt"),
    (),
    "activity",
    ("lastActiveAt",),
)


class FileError(Exception):
    """The file as a whole cannot be read (its line, when known)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Report:
    path: str
    loaded: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)

    def reject(self, line: int, message: str) -> None:
        self.bad.append((line, message))


# Reading -------------------------------------------------------------------


def read_file(path: Path, kind: Kind, report: Report) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each row as ``(line, raw object)``; rows that are not even objects are reported."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileError(f"cannot read: {exc}") from None
    start = text.lstrip()[:1]
    if path.suffix.lower() == ".csv" or start not in ("[", "{"):
        yield from _csv(text, kind, report)
    elif start == "[":
        yield from _json_array(text, report)
    else:
        yield from _json_lines(text, report)


def _csv(text: str, kind: Kind, report: Report) -> Iterator[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [name.strip() for name in reader.fieldnames or []]
    if not header:
        raise FileError("empty file: expected a header row", 1)
    unknown = [n for n in header if n not in kind.required + kind.optional]
    if unknown:
        raise FileError(
            f"unknown column {unknown[0]!r}; columns: {', '.join(kind.required + kind.optional)}",
            1,
        )
    missing = [n for n in kind.required if n not in header]
    if missing:
        raise FileError(f"missing column {missing[0]!r}", 1)
    reader.fieldnames = header
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            report.reject(reader.line_num, f"malformed CSV: {exc}")
            continue
        start = reader.line_num
        if None in row:
            cells = len(header) + len(row[None])  # type: ignore[index]
            report.reject(start, f"{cells} cells, the header has {len(header)}")
            continue
        values: dict[str, Any] = {k: v.strip() for k, v in row.items() if v and v.strip()}
        if not values:
            continue  # a blank line
        if "isAdmin" in values:
            flag = values["isAdmin"].lower()
            if flag not in _TRUE | _FALSE:
                report.reject(start, "isAdmin: expected true or false")
                continue
            values["isAdmin"] = flag in _TRUE
        yield start, values


def _line_of(text: str, index: int) -> int:
    return text.count("\n", 0, index) + 1


def _skip_space(text: str, index: int) -> int:
    while index < len(text) and text[index] in " \t\r\n":
        index += 1
    return index


def _json_array(text: str, report: Report) -> Iterator[tuple[int, dict[str, Any]]]:
    decoder = json.JSONDecoder()
    index = _skip_space(text, 0) + 1  # past the "["
    while True:
        index = _skip_space(text, index)
        if index < len(text) and text[index] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            raise FileError(
                f"malformed JSON: {exc.msg}; the rows after it were not read", exc.lineno
            ) from None
        line = _line_of(text, index)
        if isinstance(value, dict):
            yield line, value
        else:
            report.reject(line, "expected an object")
        index = _skip_space(text, end)
        if index < len(text) and text[index] == ",":
            index += 1
        elif index >= len(text) or text[index] != "]":
            raise FileError(
                "malformed JSON: expected ',' or ']'; the rows after it were not read",
                _line_of(text, index),
            )


def _json_lines(text: str, report: Report) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            report.reject(line, f"malformed JSON: {exc.msg}")
            continue
        if isinstance(value, dict):
            yield line, value
        else:
            report.reject(line, "expected an object")


def check_row(kind: Kind, values: dict[str, Any]) -> dict[str, Any]:
    """The row as the API takes it; ValueError saying what is wrong (the field first)."""
    try:
        row = msgspec.convert(values, kind.row_type)
    except msgspec.ValidationError as exc:
        raise ValueError(from_validation(exc).message) from None
    for name in kind.times:
        attr = "".join("_" + c.lower() if c.isupper() else c for c in name)
        value = getattr(row, attr)
        if value is not None and not in_range(value):
            raise ValueError(f"{name}: outside years 1 to 9999 in UTC")
    encoded: dict[str, Any] = msgspec.to_builtins(row)
    return {k: v for k, v in encoded.items() if v is not None}


# Sending -------------------------------------------------------------------


class ServerError(Exception):
    pass


def _send(
    client: httpx.Client,
    target: str,
    kind: Kind,
    batch: list[tuple[int, dict[str, Any]]],
    report: Report,
) -> None:
    """Load one batch (one transaction); a row the server refuses is reported, the rest resent."""
    while batch:
        try:
            response = client.post(target, json={kind.list_name: [row for _, row in batch]})
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach the server: {exc}") from None
        if response.status_code == 400:
            index, message = _refused_row(response, kind)
            if index is None:
                raise ServerError(f"the server refused the batch: {response.text}")
            report.reject(batch[index][0], message)
            del batch[index]
            continue
        if response.status_code != 200:
            raise ServerError(f"the server answered {response.status_code}: {response.text}")
        answer = response.json()
        for rejection in answer.get("rejected", []):
            report.reject(batch[rejection["index"]][0], rejection["message"])
        report.loaded += int(answer["loaded"])
        return


def _refused_row(response: httpx.Response, kind: Kind) -> tuple[int | None, str]:
    try:
        error = response.json()["error"]
        field_name = str(error.get("field") or "")
        message = str(error["message"])
    except (ValueError, KeyError, TypeError):
        return None, ""
    prefix = kind.list_name + "["
    if not field_name.startswith(prefix):
        return None, message
    index, _, rest = field_name[len(prefix) :].partition("]")
    if not index.isdigit():
        return None, message
    name = rest.lstrip(".")
    return int(index), message if not name or message.startswith(name) else f"{name}: {message}"


def run(args: argparse.Namespace) -> int:
    kind = MEMBERS if args.what == "members" else ACTIVITY
    report = Report(str(args.file))
    if kind is MEMBERS:
        target = f"/admin/groups/{quote(args.group, safe='@')}/members/import"
    else:
        target = "/admin/activity/import"
    headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
    status = 0
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=args.timeout) as client:
            batch: list[tuple[int, dict[str, Any]]] = []
            try:
                for line, values in read_file(Path(args.file), kind, report):
                    try:
                        batch.append((line, check_row(kind, values)))
                    except ValueError as exc:
                        report.reject(line, str(exc))
                    if len(batch) >= BATCH:
                        _send(client, target, kind, batch, report)
                        batch = []
            except FileError as exc:  # the rows read before it still load
                where = f"{report.path}:{exc.line}" if exc.line else report.path
                print(f"{where}: {exc}", file=sys.stderr)
                status = 2
            _send(client, target, kind, batch, report)
    except ServerError as exc:
        print(f"jobsup import: {exc}", file=sys.stderr)
        status = 2
    for line, message in sorted(report.bad):
        print(f"{report.path}:{line}: {message}", file=sys.stderr)
    print(f"loaded {report.loaded} rows; {len(report.bad)} rejected")
    return status or (1 if report.bad else 0)


def add_parser(commands: Any) -> None:
    """``jobsup import``: registered by ``supervisor.cli``."""
    parser = commands.add_parser("import", help="load members or activity from a CSV or JSON file")
    kinds = parser.add_subparsers(dest="what", required=True)
    for name, text in (
        ("members", "members of one group: whatsappId, isAdmin, joinedAt, lastActiveAt"),
        ("activity", "last activity: whatsappId, groupWaId, lastActiveAt"),
    ):
        sub = kinds.add_parser(name, help=text, description=text, epilog=EPILOG)
        sub.add_argument("file", help="a .csv file (header row), a JSON array or JSON Lines")
        if name == "members":
            sub.add_argument("--group", required=True, help="the group's id (groupWaId)")
        sub.add_argument(
            "--url",
            default=os.environ.get("JOBSUP_URL", DEFAULT_URL),
            help=f"the jobsup server (JOBSUP_URL, default {DEFAULT_URL})",
        )
        sub.add_argument(
            "--token",
            default=os.environ.get("JOBSUP_TOKEN"),
            help="an admin token (JOBSUP_TOKEN)",
        )
        sub.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
        sub.set_defaults(run=run)
