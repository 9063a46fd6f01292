"""``jobsup import members|activity``: a real command against a real server.

Bad rows are reported with their line numbers and the good ones load; a
request's rows are one transaction, so a refused batch writes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Server

GROUP = "120363295648424210@g.us"
PN = "5511999990000@s.whatsapp.net"
LID = "123456789012345@lid"


def jobsup_import(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    token = server.client.headers.get("authorization", "").removeprefix("Bearer ")
    command = [sys.executable, "-m", "supervisor", "import", *args, "--url", server.url]
    return subprocess.run(
        [*command, *(["--token", token] if token else [])],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def members(server: Server, group: str = GROUP) -> dict[str, dict[str, Any]]:
    response = server.client.get(f"/admin/groups/{group}/members?includeRemoved=true")
    assert response.status_code == 200, response.text
    return {m["whatsappId"]: m for m in response.json()}


def test_members_from_csv_report_bad_lines_and_load_the_rest(
    server: Server, tmp_path: Path
) -> None:
    path = tmp_path / "members.csv"
    path.write_text(
        "whatsappId,isAdmin,joinedAt,lastActiveAt,altId\n"  # line 1
        f"{PN},false,2025-01-01T00:00:00Z,2025-06-01T12:00:00Z,{LID}\n"  # 2: good
        "111@lid,maybe,2025-01-01T00:00:00Z,,\n"  # 3: isAdmin
        "222@lid,true,2025-01-02T00:00:00Z,,\n"  # 4: good, an admin, never active
        ",false,2025-01-01T00:00:00Z,,\n"  # 5: no whatsappId
        "333@lid,false,2025-01-01 00:00:00,,\n"  # 6: a time without a zone
        "\n"  # 7: blank
        "444@lid,false,2025-01-01T00:00:00Z,not a time\n"  # 8: lastActiveAt
        "555@lid,false,2025-01-01T00:00:00Z,,,extra\n"  # 9: a cell too many
        "666@lid,0,2025-02-01T00:00:00+02:00\n"  # 10: good, short row
    )
    done = jobsup_import(server, "members", str(path), "--group", GROUP)
    assert done.returncode == 1, done.stderr
    lines = [line.split(": ", 1)[0] for line in done.stderr.splitlines()]
    assert lines == [f"{path}:{n}" for n in (3, 5, 6, 8, 9)], done.stderr
    assert "isAdmin" in done.stderr
    assert "whatsappId" in done.stderr
    assert "loaded 3 rows; 5 rejected" in done.stdout
    loaded = members(server)
    assert sorted(loaded) == sorted([PN, "222@lid", "666@lid"])
    assert loaded[PN]["altId"] == LID
    assert loaded[PN]["lastActiveAt"] == "2025-06-01T12:00:00.000Z"
    assert (loaded["222@lid"]["isAdmin"], loaded["222@lid"]["lastActiveAt"]) == (True, None)
    assert loaded["666@lid"]["joinedAt"] == "2025-01-31T22:00:00.000Z"
    # The group did not exist: the import made it, named by its id.
    assert server.client.get(f"/admin/groups/{GROUP}").json()["name"] == GROUP


def test_members_from_json_and_json_lines_name_their_lines(server: Server, tmp_path: Path) -> None:
    rows: list[Any] = [
        {"whatsappId": PN, "isAdmin": False, "joinedAt": "2025-01-01T00:00:00Z"},
        {"whatsappId": "111@lid", "isAdmin": "yes", "joinedAt": "2025-01-01T00:00:00Z"},
        ["not", "an", "object"],
        {"whatsappId": "222@lid", "joinedAt": "2025-01-01T00:00:00Z", "nickname": "x"},
        {"whatsappId": "333@lid", "joinedAt": "2025-01-01T00:00:00Z"},
    ]
    array = tmp_path / "members.json"
    array.write_text("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")
    done = jobsup_import(server, "members", str(array), "--group", GROUP)
    assert done.returncode == 1
    assert [line.split(": ", 1)[0] for line in done.stderr.splitlines()] == [
        f"{array}:{n}" for n in (3, 4, 5)
    ], done.stderr
    assert "nickname" in done.stderr
    assert sorted(members(server)) == sorted([PN, "333@lid"])

    broken = tmp_path / "broken.json"
    broken.write_text(
        "[\n"
        + json.dumps({"whatsappId": "666@lid", "joinedAt": "2025-01-01T00:00:00Z"})
        + ",\n{oops\n]\n"
    )
    done = jobsup_import(server, "members", str(broken), "--group", GROUP)
    assert done.returncode == 2
    assert done.stderr.startswith(f"{broken}:3: malformed JSON")
    assert "loaded 1 rows" in done.stdout
    assert "666@lid" in members(server)

    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text(
        json.dumps({"whatsappId": "444@lid", "joinedAt": "2025-01-01T00:00:00Z"})
        + "\n{broken\n"
        + json.dumps({"whatsappId": "555@lid", "joinedAt": "2025-01-01T00:00:00Z"})
        + "\n"
    )
    done = jobsup_import(server, "members", str(jsonl), "--group", GROUP)
    assert done.returncode == 1
    assert done.stderr.startswith(f"{jsonl}:2: malformed JSON")
    assert {"444@lid", "555@lid"} <= set(members(server))


def test_activity_moves_forward_only_and_reports_unknown_members(
    server: Server, tmp_path: Path
) -> None:
    body = {
        "name": "g",
        "members": [
            {
                "whatsappId": PN,
                "altId": LID,
                "joinedAt": "2025-01-01T00:00:00Z",
                "lastActiveAt": "2025-05-01T00:00:00Z",
            },
            {"whatsappId": "222@lid", "joinedAt": "2025-01-01T00:00:00Z"},
        ],
    }
    assert server.client.put(f"/admin/groups/{GROUP}", json=body).status_code == 200
    path = tmp_path / "activity.csv"
    path.write_text(
        "whatsappId,groupWaId,lastActiveAt\n"
        f"{LID},{GROUP},2025-06-01T00:00:00Z\n"  # 2: by the other id: forward
        f"222@lid,{GROUP},2025-03-01T00:00:00Z\n"  # 3: first activity
        f"{PN},{GROUP},2025-02-01T00:00:00Z\n"  # 4: older than known: no change
        f"999@lid,{GROUP},2025-02-01T00:00:00Z\n"  # 5: not a member
        f"222@lid,999@g.us,2025-02-01T00:00:00Z\n"  # 6: not a group
        f"222@lid,{GROUP},yesterday\n"  # 7: not a time
    )
    done = jobsup_import(server, "activity", str(path))
    assert done.returncode == 1
    assert [line.split(": ", 1)[0] for line in done.stderr.splitlines()] == [
        f"{path}:{n}" for n in (5, 6, 7)
    ], done.stderr
    assert "no member '999@lid'" in done.stderr
    assert "no group '999@g.us'" in done.stderr
    assert "loaded 3 rows; 3 rejected" in done.stdout
    seen = members(server)
    assert seen[PN]["lastActiveAt"] == "2025-06-01T00:00:00.000Z"
    assert seen["222@lid"]["lastActiveAt"] == "2025-03-01T00:00:00.000Z"
    # Again: nothing moves, nothing fails but the same rows.
    assert jobsup_import(server, "activity", str(path)).returncode == 1
    assert members(server) == seen


def test_a_refused_batch_writes_nothing(server: Server) -> None:
    rows = [
        {"whatsappId": PN, "joinedAt": "2025-01-01T00:00:00Z"},
        {"whatsappId": "111@lid", "joinedAt": "0000-01-01T00:00:00Z"},
    ]
    response = server.client.post(f"/admin/groups/{GROUP}/members/import", json={"members": rows})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "members[1].joinedAt"
    assert server.client.get(f"/admin/groups/{GROUP}").status_code == 404
    rows[1]["joinedAt"] = "9999-12-31T23:59:59+00:00"
    response = server.client.post(f"/admin/groups/{GROUP}/members/import", json={"members": rows})
    assert response.status_code == 200, response.text
    assert response.json() == {"loaded": 2, "rejected": []}


def test_an_unreadable_file_or_server_is_one_line_and_exit_2(
    server: Server, tmp_path: Path
) -> None:
    done = jobsup_import(server, "activity", str(tmp_path / "missing.csv"))
    assert (done.returncode, done.stderr.count("\n")) == (2, 1)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("whatsappId,group,lastActiveAt\n")
    done = jobsup_import(server, "activity", str(wrong))
    assert done.returncode == 2
    assert done.stderr.startswith(f"{wrong}:1: unknown column 'group'")


@pytest.mark.postgres
def test_both_imports_on_postgresql(
    make_server: Callable[..., Server], pg_url: str, tmp_path: Path
) -> None:
    server = make_server(DATABASE_URL=pg_url)
    members_file = tmp_path / "members.jsonl"
    members_file.write_text(
        json.dumps(
            {"whatsappId": PN, "altId": LID, "isAdmin": True, "joinedAt": "2025-01-01T00:00:00Z"}
        )
        + "\n"
        + json.dumps({"whatsappId": "222@lid", "joinedAt": "2025-01-01T00:00:00Z"})
        + "\n"
    )
    done = jobsup_import(server, "members", str(members_file), "--group", GROUP)
    assert (done.returncode, done.stdout.strip()) == (0, "loaded 2 rows; 0 rejected"), done.stderr
    activity_file = tmp_path / "activity.csv"
    activity_file.write_text(
        "whatsappId,groupWaId,lastActiveAt\n"
        f"{LID},{GROUP},2025-06-01T00:00:00Z\n"
        f"333@lid,{GROUP},2025-06-01T00:00:00Z\n"
    )
    done = jobsup_import(server, "activity", str(activity_file))
    assert done.returncode == 1
    assert done.stderr.startswith(f"{activity_file}:3: no member '333@lid'")
    seen = members(server)
    assert (seen[PN]["isAdmin"], seen[PN]["lastActiveAt"]) == (True, "2025-06-01T00:00:00.000Z")
    assert seen["222@lid"]["lastActiveAt"] is None
