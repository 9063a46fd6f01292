"""What an operator sees: /metrics after jobs of each outcome, JSON log lines, request ids."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Server, wait_until


def _samples(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = server.client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_after_jobs_of_each_outcome(server: Server) -> None:
    completed = server.start_job({"type": "quick", "value": 1})
    failed = server.start_job({"type": "crash", "how": "sigkill"})
    raised = server.start_job({"type": "crash", "how": "exception"})
    server.wait_status(completed, "completed")
    server.wait_status(failed, "failed")
    server.wait_status(raised, "failed")
    slow = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(slow, "running")
    assert server.client.post(f"/admin/jobs/{slow}/cancel").status_code in (200, 202)
    server.wait_status(slow, "cancelled")
    server.client.get("/admin/jobs/no-such-job/status")

    def counted() -> dict[Any, float] | None:
        samples = _samples(server)
        done = _value(samples, "jobsup_jobs_finished_total", type="sleepy", status="cancelled")
        return samples if done else None

    samples = wait_until(counted)
    finished = "jobsup_jobs_finished_total"
    assert _value(samples, finished, type="quick", status="completed") == 1
    assert _value(samples, finished, type="crash", status="failed") == 2
    assert _value(samples, "jobsup_jobs_accepted_total", type="crash") == 2
    # A child killed by a signal crashed; one that raised reported its failure.
    assert _value(samples, "jobsup_child_crashes_total", cause="SIGKILL") == 1
    assert not any(
        k[0] == "jobsup_child_crashes_total"
        and v
        and k != ("jobsup_child_crashes_total", (("cause", "SIGKILL"),))
        for k, v in samples.items()
    )
    duration = "jobsup_job_duration_seconds_count"
    assert _value(samples, duration, type="quick", status="completed") == 1
    assert _value(samples, "jobsup_job_start_latency_seconds_count", type="sleepy") == 1
    cancel = "jobsup_job_cancel_latency_seconds_count"
    assert _value(samples, cancel, type="sleepy", mode="cooperative") == 1
    cancel_sum = _value(
        samples, "jobsup_job_cancel_latency_seconds_sum", type="sleepy", mode="cooperative"
    )
    assert 0 <= cancel_sum < 60  # whole milliseconds: a quick stop may take none
    assert _value(samples, "jobsup_jobs_running") == 0
    assert _value(samples, "jobsup_jobs_pending") == 0
    assert _value(samples, "jobsup_db_write_seconds_count", outcome="ok") > 0
    # Requests by route template, never by raw path (the labels stay few).
    http = "jobsup_http_requests_total"
    status_route = "/admin/jobs/{jobId}/status"
    assert _value(samples, http, method="GET", route=status_route, status="200") >= 4
    assert _value(samples, http, method="GET", route=status_route, status="404") == 1
    assert _value(samples, http, method="POST", route="/admin/jobs/start", status="202") == 4
    assert not any("no-such-job" in str(key) for key in samples)


def test_running_gauge_counts_a_running_job(server: Server) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(job_id, "running")
    assert _value(_samples(server), "jobsup_jobs_running") == 1
    server.client.post(f"/admin/jobs/{job_id}/cancel")


def _json_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for line in server.log().splitlines():
        if line.strip():
            lines.append(json.loads(line))  # every line is one JSON object
    return lines


def test_json_log_lines_carry_the_request_and_the_job(
    make_server: Callable[..., Server],
) -> None:
    server = make_server(JOBSUP_LOG_FORMAT="json")
    response = server.client.post(
        "/admin/jobs/start",
        json={"type": "quick", "value": 2},
        headers={"X-Request-ID": "start-req.1"},
    )
    assert response.status_code == 202
    assert response.headers["x-request-id"] == "start-req.1"
    job_id = response.json()["jobId"]
    server.wait_status(job_id, "completed")

    def lifecycle() -> list[dict[str, Any]] | None:
        lines = [line for line in _json_lines(server) if line.get("jobId") == job_id]
        return lines if any("completed" in line["message"] for line in lines) else None

    lines = wait_until(lifecycle)
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message", "jobId"}
        assert line["time"].endswith("Z")
    accepted = [line for line in lines if "accepted" in line["message"]]
    assert len(accepted) == 1
    assert accepted[0]["requestId"] == "start-req.1"
    assert accepted[0]["level"] == "info"
    # One INFO line for the run: its end, with the child's pid (the start is at DEBUG).
    assert any(line["message"].startswith(f"job {job_id} completed (pid ") for line in lines)
    assert not any(line["message"].startswith(f"job {job_id} started") for line in lines)
    # uvicorn's own lines go through the same formatter.
    assert any(line["logger"].startswith("uvicorn") for line in _json_lines(server))


def test_json_log_line_of_a_cancel_and_a_stop(make_server: Callable[..., Server]) -> None:
    server = make_server(JOBSUP_LOG_FORMAT="json")
    job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(job_id, "running")
    server.client.post(f"/admin/jobs/{job_id}/cancel", headers={"X-Request-ID": "cancel-1"})
    server.wait_status(job_id, "cancelled")

    def stopped() -> list[dict[str, Any]] | None:
        lines = [line for line in _json_lines(server) if line.get("jobId") == job_id]
        return lines if any("stopped" in line["message"] for line in lines) else None

    lines = wait_until(stopped)
    requested = [line for line in lines if "cancel requested" in line["message"]]
    assert [line["requestId"] for line in requested] == ["cancel-1"]
    stop = next(line for line in lines if "stopped" in line["message"])
    assert "cooperative" in stop["message"]
    assert "ms after the request" in stop["message"]


def test_request_id_is_echoed_when_sane_and_made_otherwise(server: Server) -> None:
    sane = server.client.get("/healthz", headers={"X-Request-ID": "abc-DEF_1.2"})
    assert sane.headers["x-request-id"] == "abc-DEF_1.2"
    for bad in ("has space", "x" * 129, "semi;colon", ""):
        response = server.client.get("/healthz", headers={"X-Request-ID": bad})
        made = response.headers["x-request-id"]
        assert made != bad
        assert 1 <= len(made) <= 128
    first = server.client.get("/healthz").headers["x-request-id"]
    second = server.client.get("/healthz").headers["x-request-id"]
    assert first != second
    # Error answers too: unknown route, wrong method, a path the edge refuses.
    for response in (
        server.client.get("/nowhere"),
        server.client.delete("/healthz"),
        server.client.get("/admin/jobs/a%00b/status"),
    ):
        assert response.status_code in (400, 404, 405)
        assert response.headers["x-request-id"]


def test_text_log_lines_name_the_request(make_server: Callable[..., Server]) -> None:
    server = make_server()
    response = server.client.post(
        "/admin/jobs/start", json={"type": "quick"}, headers={"X-Request-ID": "text-req-7"}
    )
    job_id = response.json()["jobId"]
    wait_until(lambda: f"[request=text-req-7 job={job_id}]" in server.log())
