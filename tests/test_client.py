"""supervisor.client (Client, AsyncClient) and the jobsup client commands, against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from supervisor.client import AsyncClient, Client, ClientError, ProgressData
from supervisor.job import Job
from tests.conftest import Server, free_port, wait_until
from tests.helpers import group_body

JOBSUP = str(Path(sys.executable).parent / "jobsup")


def _token(server: Server) -> str | None:
    """The token the test server's own client sends, if any."""
    auth = server.client.headers.get("authorization", "")
    return auth.removeprefix("Bearer ") or None


def client_for(server: Server) -> Client:
    return Client(url=server.url, token=_token(server))


def test_client_calls(server: Server) -> None:
    with client_for(server) as client:
        answer = client.start("sleepy", steps=3, stepMs=50)
        assert answer.status == "pending"
        job = client.wait(answer.job_id, timeout=60)
        assert isinstance(job, Job)
        assert job.status == "completed"
        assert job.result == {"steps": 3}
        assert client.status(answer.job_id).status == "completed"
        assert [j.id for j in client.list(type="sleepy")] == [answer.job_id]
        assert client.list(status="running") == []

        kinds = []
        other = client.start("chatty", count=5, stepMs=20)
        for event in client.events(other.job_id):
            kinds.append(event.kind)
            if event.kind == "progress":
                assert isinstance(event.data, ProgressData)
        assert kinds[0] == "snapshot"
        assert kinds[-1] == "finished"

        stuck = client.start("sleepy", steps=1, stepMs=60_000)
        wait_until(lambda: client.status(stuck.job_id).status == "running")
        assert client.cancel(stuck.job_id).status == "cancelled"

        client.put_group("g1", group_body(inactive=2))
        assert client.group("g1")["groupWaId"] == "g1"

        with pytest.raises(ClientError) as bad:
            client.start("sleepy", steps="many")
        assert bad.value.status == 400
        assert bad.value.field == "steps"
        assert bad.value.code
        assert "steps" in bad.value.message
        with pytest.raises(ClientError) as missing:
            client.status("nope")
        assert missing.value.status == 404
        with pytest.raises(ClientError) as refused:
            client.cancel(answer.job_id)
        assert refused.value.status == 400
        assert "already completed" in refused.value.message


def test_client_reads_url_and_token_from_the_environment(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSUP_URL", server.url)
    token = _token(server)
    if token:
        monkeypatch.setenv("JOBSUP_TOKEN", token)
    with Client() as client:
        assert client.list() == []
    with Client(url=f"http://127.0.0.1:{free_port()}") as client, pytest.raises(ClientError) as e:
        client.list()
    assert e.value.status is None
    assert e.value.code == "unreachable"


def test_async_client(server: Server) -> None:
    async def main() -> None:
        async with AsyncClient(url=server.url, token=_token(server)) as client:
            answer = await client.start("chatty", count=5, stepMs=20)
            kinds = [event.kind async for event in client.events(answer.job_id)]
            assert kinds[0] == "snapshot"
            assert kinds[-1] == "finished"
            job = await client.wait(answer.job_id, timeout=60)
            assert job.status == "completed"
            assert (await client.status(answer.job_id)).result == {"count": 5}
            assert [j.id for j in await client.list()] == [answer.job_id]
            stuck = await client.start("sleepy", steps=1, stepMs=60_000)
            assert (await client.cancel(stuck.job_id)).status in ("cancelled", "cancelling")
            with pytest.raises(ClientError) as bad:
                await client.start("nope")
            assert bad.value.status == 400
            assert bad.value.field == "type"

    asyncio.run(main())


def test_events_resume_by_themselves_across_a_restart(make_server: Any, tmp_path: Path) -> None:
    server = make_server()
    with client_for(server) as client:
        job = client.start("sleepy", steps=1, stepMs=60_000)
        events = client.events()  # every job's stream, never ending
        first = next(events)
        assert first.kind == "snapshot"
        assert first.data.id == job.job_id
        # A new server on the same port and database: the stream reconnects to it.
        server.stop()
        again = make_server(start=False)
        again.port, again.url = server.port, server.url
        again.env["PORT"] = str(server.port)
        again.client = server.client
        again.start()
        later = client.start("sleepy", steps=1, stepMs=60_000)
        # Its old id is another process's: a fresh snapshot of the live jobs.
        for event in events:
            if event.kind == "snapshot" and event.data.id == later.job_id:
                break
        client.cancel(later.job_id)
        events.close()


# -- the jobsup command ------------------------------------------------------------


def jobsup(server: Server | None, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [JOBSUP, *args],
        env=_env(server),
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def _env(server: Server | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSUP_")}
    env["JOBSUP_URL"] = server.url if server else f"http://127.0.0.1:{free_port()}"
    token = _token(server) if server else None
    if token:
        env["JOBSUP_TOKEN"] = token
    return env


def test_cli_exit_codes(server: Server) -> None:
    done = jobsup(server, "start", "quick", "--config", '{"value": 3}', "--watch")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[0]
    assert "completed" in done.stdout
    assert jobsup(server, "status", job_id).returncode == 0

    failed = jobsup(server, "start", "crash", "--watch")
    assert failed.returncode == 1, failed.stderr
    assert "the job broke" in failed.stdout

    refused = jobsup(server, "start", "sleepy", "--config", '{"steps": "many"}')
    assert refused.returncode == 2
    assert "steps" in refused.stderr
    assert "Traceback" not in refused.stderr
    usage = jobsup(server, "start")  # no type
    assert usage.returncode == 2
    missing = jobsup(server, "status", "nope")
    assert missing.returncode == 2
    assert "no job 'nope'" in missing.stderr

    stuck = jobsup(server, "start", "sleepy", "--config", '{"steps": 1, "stepMs": 60000}')
    stuck_id = stuck.stdout.split()[0]
    server.wait_status(stuck_id, "running")
    cancelled = jobsup(server, "cancel", stuck_id)
    assert cancelled.returncode == 0
    assert "cancelled" in cancelled.stdout
    assert jobsup(server, "watch", stuck_id).returncode == 3
    assert jobsup(server, "status", stuck_id).returncode == 3
    again = jobsup(server, "cancel", stuck_id)  # already cancelled: refused
    assert again.returncode == 2
    assert "already cancelled" in again.stderr

    down = jobsup(None, "list")
    assert down.returncode == 4
    assert "cannot reach" in down.stderr
    assert "Traceback" not in down.stderr


def test_cli_json_list_status_and_groups(server: Server, tmp_path: Path) -> None:
    job_id = jobsup(server, "start", "quick", "--json").stdout
    job_id = json.loads(job_id)["jobId"]
    server.wait_status(job_id, "completed")
    wait_until(lambda: server.status(job_id)["resources"])  # the last write a job gets
    listed = json.loads(jobsup(server, "list", "--json", "--type", "quick").stdout)
    assert [j["id"] for j in listed] == [job_id]
    status = json.loads(jobsup(server, "status", job_id, "--json").stdout)
    assert status["status"] == "completed"
    assert status == server.status(job_id)  # as the server says it, times included
    watched = jobsup(server, "start", "quick", "--json", "--watch").stdout.splitlines()
    finished = json.loads(watched[-1])
    assert finished["event"] == "finished"
    assert finished["data"]["completedAt"].endswith("Z")
    assert len(finished["data"]["completedAt"]) == len("2026-01-01T00:00:00.000Z")
    table = jobsup(server, "list", "--status", "completed")
    assert job_id in table.stdout

    path = tmp_path / "group.json"
    path.write_text(json.dumps({"groupWaId": "g1", **group_body(inactive=3)}))
    put = jobsup(server, "groups", "put", str(path), "--json")
    assert put.returncode == 0, put.stderr
    shown = json.loads(jobsup(server, "groups", "show", "g1", "--json").stdout)
    assert shown["groupWaId"] == "g1"
    assert "g1" in jobsup(server, "groups", "show", "g1").stdout
    removal = jobsup(
        server,
        "start",
        "removal_workflow",
        "--group",
        "g1",
        "--batch-size",
        "2",
        "--delay-ms",
        "0",
        "--inactivity-days",
        "30",
        "--dry-run",
        "--watch",
    )
    assert removal.returncode == 0, removal.stderr
    assert "completed" in removal.stdout


def _watching(server: Server, job_id: str, *extra: str) -> subprocess.Popen[str]:
    watch = subprocess.Popen(
        [JOBSUP, "watch", job_id, "--json", *extra],
        env=_env(server),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    first = json.loads(watch.stdout.readline())  # it follows the stream now
    assert first["event"] == "snapshot"
    return watch


@pytest.mark.parametrize("answer", ["y", "n"])
def test_ctrl_c_on_watch_asks_whether_to_cancel(server: Server, answer: str) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(job_id, "running")
    watch = _watching(server, job_id)
    assert watch.stdin is not None
    watch.stdin.write(answer + "\n")
    watch.stdin.flush()
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=60)
    assert "Traceback" not in err
    if answer == "y":
        assert watch.returncode == 3, err
        assert server.status(job_id)["status"] == "cancelled"
    else:
        assert watch.returncode == 130, err
        assert "keeps running" in out
        assert server.status(job_id)["status"] == "running"


def test_ctrl_c_with_cancel_on_interrupt(server: Server) -> None:
    job_id = server.start_job({"type": "sleepy", "steps": 1, "stepMs": 60_000})
    server.wait_status(job_id, "running")
    watch = _watching(server, job_id, "--cancel-on-interrupt")
    watch.send_signal(signal.SIGINT)
    _, err = watch.communicate(timeout=60)
    assert watch.returncode == 3, err
    assert server.status(job_id)["status"] == "cancelled"


def _read_until(fd: int, text: bytes, seen: bytearray) -> None:
    def found() -> bool:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                seen.extend(os.read(fd, 65536))
            except OSError:  # the other end closed
                return True
        return text in seen

    wait_until(found, timeout=30)


def test_ctrl_c_on_watch_in_a_terminal_asks_with_a_prompt(server: Server) -> None:
    job_id = server.start_job({"type": "chatty", "count": 100_000, "stepMs": 50})
    server.wait_status(job_id, "running")
    master, slave = pty.openpty()
    watch = subprocess.Popen(
        [JOBSUP, "watch", job_id], env=_env(server), stdin=slave, stdout=slave, stderr=slave
    )
    os.close(slave)
    seen = bytearray()
    try:
        _read_until(master, b"ETA", seen)  # the progress bar is drawn
        watch.send_signal(signal.SIGINT)
        _read_until(master, b"Cancel job", seen)
        os.write(master, b"y\n")
        assert watch.wait(timeout=60) == 3, seen.decode(errors="replace")
    finally:
        if watch.poll() is None:
            watch.kill()
        os.close(master)
    assert server.status(job_id)["status"] == "cancelled"
    assert b"Traceback" not in seen


def test_cli_approve_and_reject(server: Server) -> None:
    step = server.start_job({"type": "quick", "value": 5, "approval": True})
    approved = jobsup(server, "approve", step)
    assert approved.returncode == 0, approved.stderr
    assert (
        f"{step}  pending" in approved.stdout
        or server.status(step)["status"] != "awaiting_approval"
    )
    assert server.wait_status(step, "completed")["approval"]["approvedAt"] is not None
    again = jobsup(server, "reject", step)
    assert again.returncode != 0
    assert "not awaiting approval" in again.stderr
    other = server.start_job({"type": "quick", "approval": True})
    rejected = jobsup(server, "reject", other, "--json")
    assert rejected.returncode == 0, rejected.stderr
    assert '"status":"cancelled"' in rejected.stdout.replace(" ", "")
