"""The README's example session, run as written against a real server.

Every command of the session's shell block runs in bash with the real
``curl``; its status code and the shape of its answer must be what the
README prints under it. ``…`` in the README stands for a value that differs
between runs (any value), a part of a string (``"inactive for … days"``),
more list items (``, …]``) or more fields (``,…}``).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.conftest import ROOT, Server, wait_until

README = ROOT / "README.md"
ANY = "…"
MORE = "\u2026more"  # a list item or object key standing for "and more"


@dataclass
class Step:
    command: str
    expected: str | None  # the README's printed answer, "# " markers stripped


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def session_block() -> str:
    (block,) = [b for b in shell_blocks(README.read_text()) if "api() {" in b]
    return block


def steps(block: str) -> list[Step]:
    """Commands (a quoted body may span lines) and the comment lines right under each."""
    found: list[Step] = []
    lines = block.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.startswith("#"):
            i += 1
            continue
        command = [line]
        while command[-1].endswith("\\") or "\n".join(command).count("'") % 2:
            i += 1
            command.append(lines[i])
        i += 1
        output = []
        while i < len(lines) and lines[i].startswith("#"):
            output.append(lines[i][1:].strip())
            i += 1
        found.append(Step("\n".join(command), "".join(output) or None))
    return found


def pattern(text: str) -> Any:
    """The README's printed JSON, with its ``…`` marks made into JSON that ``matches`` reads."""
    text = re.sub(r"\{\s*…\s*\}", f'{{"{MORE}": "{ANY}"}}', text)
    text = re.sub(r",\s*…\s*\}", f', "{MORE}": "{ANY}"}}', text)
    text = re.sub(r",\s*…\s*\]", f', "{MORE}"]', text)
    return json.loads(text)


def mismatches(expected: Any, actual: Any, where: str = "$") -> list[str]:
    if expected == ANY:
        return []
    if isinstance(expected, str) and ANY in expected:
        parts = ".*".join(re.escape(p) for p in expected.split(ANY))
        ok = isinstance(actual, str) and re.fullmatch(parts, actual, flags=re.S)
        return [] if ok else [f"{where}: {actual!r} is not {expected!r}"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: {actual!r} is not an object"]
        keys = set(expected) - {MORE}
        problems = []
        if MORE in expected:
            if not keys <= set(actual):
                problems.append(f"{where}: missing {sorted(keys - set(actual))}")
        elif keys != set(actual):
            problems.append(f"{where}: keys {sorted(actual)} are not {sorted(keys)}")
        for key in keys & set(actual):
            problems += mismatches(expected[key], actual[key], f"{where}.{key}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{where}: {actual!r} is not a list"]
        items = [e for e in expected if e != MORE]
        more = len(items) != len(expected)
        if len(actual) < len(items) or (not more and len(actual) != len(items)):
            return [f"{where}: {len(actual)} items, the README shows {len(expected)}"]
        problems = []
        for n, item in enumerate(items):
            problems += mismatches(item, actual[n], f"{where}[{n}]")
        return problems
    return [] if expected == actual else [f"{where}: {actual!r} is not {expected!r}"]


def first_batch_done(server: Server, job_id: str) -> Callable[[], bool]:
    return lambda: bool(server.status(job_id)["progress"]["processed"] > 0)


def test_the_readme_session_answers_as_printed(server: Server) -> None:
    block = session_block()
    all_steps = steps(block)
    # The session's own settings: the test's server and, once access control
    # is on, the token its client sends.
    definitions = [
        s.command for s in all_steps if re.match(r"(export )?\w+=|\w+\(\) \{", s.command)
    ]
    token = server.client.headers.get("authorization", "Bearer local-example-token-0123").split()[1]
    prelude = "\n".join(
        f"export TOKEN='{token}'"
        if d.startswith("export TOKEN=")
        else f"B='{server.url}'"
        if d.startswith("B=")
        else d
        for d in definitions
    )
    readme_job_id = job_id = ""
    commands = [s for s in all_steps if s.command not in definitions]
    assert len(commands) >= 10
    for step in commands:
        assert step.expected is not None, f"the README shows no answer for {step.command}"
        # The README's job id stands for the one the start answered.
        command = step.command.replace(readme_job_id, job_id) if job_id else step.command
        result = subprocess.run(
            ["bash", "-c", f"set -e\n{prelude}\n{command}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        body, _, status = result.stdout.strip().rpartition(" ")
        expected_body, _, expected_status = step.expected.rpartition(" ")
        assert status == expected_status, f"{command}\nanswered {status}: {body}"
        answer = json.loads(body)
        if "/admin/jobs/start" in command:
            readme_job_id, job_id = pattern(expected_body)["jobId"], answer["jobId"]
        if job_id:
            expected_body = expected_body.replace(readme_job_id, job_id)
        problems = mismatches(pattern(expected_body), answer)
        assert not problems, f"{command}\nanswered {body}\n" + "\n".join(problems)
        if "/admin/jobs/start" in command:
            # A reader takes a moment before the next command: the first batch is done.
            wait_until(first_batch_done(server, job_id), timeout=10)


def test_the_session_uses_the_token_and_port_of_the_quick_start() -> None:
    text = README.read_text()
    serve = next(b for b in shell_blocks(text) if "jobsup serve" in b)
    token = re.search(r"export TOKEN=(\S+)", serve)
    assert token is not None
    assert 'JOBSUP_TOKENS="admin:$TOKEN"' in serve
    assert f"export TOKEN={token.group(1)}" in session_block()
    assert len(token.group(1)) >= 16
    assert "B=http://127.0.0.1:8000\n" in session_block()  # the default PORT


def test_the_pattern_reader() -> None:
    expected = pattern('{"a":"…","b":[1, …],"c":"x … z",…}')
    assert mismatches(expected, {"a": 5, "b": [1, 2, 3], "c": "x y z", "d": 0}) == []
    assert mismatches(expected, {"a": 5, "b": [2], "c": "x y z"}) != []
    assert mismatches(expected, {"b": [1], "c": "x y z"}) != []  # "a" is missing
    assert mismatches(pattern('{"a":1}'), {"a": 1, "b": 2}) != []  # exact keys without …
    assert mismatches(pattern('["…","…"]'), ["x"]) != []
