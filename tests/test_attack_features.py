"""Hostile requests against limits, pause, chains, approvals and their streams.

Each test here is a defect found by attacking a real server from outside.
"""

from __future__ import annotations

from tests.conftest import Server


def test_result_to_config_fills_only_the_types_own_fields(server: Server) -> None:
    parent = server.start_job({"type": "quick", "value": 1})
    for field in ("type", "noSuchField"):
        answer = server.client.post(
            "/admin/jobs/start",
            json={
                "type": "quick",
                "after": {"jobId": parent, "resultToConfig": {field: "value"}},
            },
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["field"] == "after.resultToConfig"
    answer = server.client.post(
        "/admin/chains",
        json={
            "steps": [
                {"type": "quick"},
                {"type": "quick", "after": {"resultToConfig": {"type": "value"}}},
            ]
        },
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == "steps[1].after.resultToConfig"
    # A real field still passes the parent's result on.
    child = server.start_job(
        {"type": "quick", "after": {"jobId": parent, "resultToConfig": {"value": "value"}}}
    )
    assert server.wait_status(child, "completed")["result"] == {"value": 1}
