"""A job's captured output: stdout, stderr and ctx.log lines, bounded, stored and paged."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from supervisor.store import job_logs
from supervisor.store.job_logs import Line
from supervisor.testing import ServerProcess
from tests.conftest import VIEWER_TOKEN, Server, wait_until
from workers.db import connect


def _page(server: Server, job_id: str, **query: Any) -> dict[str, Any]:
    response = server.client.get(f"/admin/jobs/{job_id}/logs", params=query)
    assert response.status_code == 200, response.text
    return dict(response.json())


def _all_lines(server: Server, job_id: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    after = 0
    while True:
        page = _page(server, job_id, after=after, limit=10_000)
        if not page["lines"]:
            return lines
        lines += page["lines"]
        after = page["nextAfter"]


def _texts(server: Server, job_id: str) -> list[str]:
    return [line["text"] for line in _all_lines(server, job_id)]


def test_stdout_stderr_and_ctx_log_lines_are_kept_with_their_stream(server: Server) -> None:
    job_id = server.start_job({"type": "end"})
    server.wait_status(job_id, "completed")
    lines = wait_until(lambda: len(_all_lines(server, job_id)) >= 3 and _all_lines(server, job_id))
    seen = {(line["stream"], line["level"], line["text"]) for line in lines}
    assert ("stdout", None, "a line on stdout") in seen
    assert ("stderr", None, "a line on stderr") in seen
    assert ("log", "warning", "a line through ctx.log") in seen
    assert [line["line"] for line in lines] == list(range(1, len(lines) + 1))
    assert all(isinstance(line["at"], int) for line in lines)


def test_logs_are_paged_with_after_and_limit(server: Server) -> None:
    job_id = server.start_job({"type": "print", "lines": 50})
    server.wait_status(job_id, "completed")
    wait_until(lambda: len(_texts(server, job_id)) == 50)
    first = _page(server, job_id, limit=20)
    assert [line["line"] for line in first["lines"]] == list(range(1, 21))
    assert first["nextAfter"] == 20
    second = _page(server, job_id, after=first["nextAfter"], limit=20)
    assert [line["line"] for line in second["lines"]] == list(range(21, 41))
    last = _page(server, job_id, after=40, limit=20)
    assert last["lines"][-1]["text"].startswith("line 000050")
    assert last["nextAfter"] == 50
    done = _page(server, job_id, after=50)
    assert (done["lines"], done["nextAfter"]) == ([], 50)
    assert (done["droppedLines"], done["droppedBytes"]) == (0, 0)


def test_logs_are_served_while_the_job_runs(server: Server) -> None:
    job_id = server.start_job({"type": "print", "lines": 3, "wait": True})
    wait_until(lambda: len(_texts(server, job_id)) == 3)
    assert server.status(job_id)["status"] == "running"
    server.client.post(f"/admin/jobs/{job_id}/cancel")
    server.wait_status(job_id, "cancelled")


def test_a_grandchilds_output_is_captured(server: Server) -> None:
    job_id = server.start_job({"type": "print", "lines": 1, "grandchild": True})
    server.wait_status(job_id, "completed")
    lines = wait_until(
        lambda: [
            (line["stream"], line["text"])
            for line in _all_lines(server, job_id)
            if "grandchild" in line["text"]
        ]
    )
    assert sorted(lines) == [("stderr", "grandchild-err"), ("stdout", "grandchild-out")]


def test_bad_paging_names_the_field_and_an_unknown_job_is_404(server: Server) -> None:
    job_id = server.start_job({"type": "quick"})
    for query, field in (
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "100001"}, "limit"),
    ):
        response = server.client.get(f"/admin/jobs/{job_id}/logs", params=query)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["field"] == field
    response = server.client.get("/admin/jobs/nosuchjob/logs")
    assert response.status_code == 404
    assert response.json()["error"]["field"] == "jobId"


def test_a_viewer_reads_logs(server: Server) -> None:
    job_id = server.start_job({"type": "quick"})
    response = server.client.get(
        f"/admin/jobs/{job_id}/logs", headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}
    )
    assert response.status_code == 200


def test_deleting_a_job_deletes_its_logs(server: Server, sqlite_url: str) -> None:
    job_id = server.start_job({"type": "print", "lines": 5})
    server.wait_status(job_id, "completed")
    wait_until(lambda: len(_texts(server, job_id)) == 5)
    assert server.client.delete(f"/admin/jobs/{job_id}").status_code == 204
    db = connect(sqlite_url)
    try:
        assert db.one("SELECT COUNT(*) FROM job_logs WHERE job_id = ?", (job_id,)) == (0,)
        assert db.one("SELECT COUNT(*) FROM job_log_meta WHERE job_id = ?", (job_id,)) == (0,)
    finally:
        db.close()


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _front_pid(server: ServerProcess) -> int:
    assert server.process is not None
    return server.process.pid


def test_ten_mib_of_stdout_is_bounded_and_the_server_stays_responsive(
    make_server: Callable[..., Server],
) -> None:
    bound = 256 * 1024
    server = make_server(JOBSUP_JOB_LOG_BYTES=str(bound))
    front = _front_pid(server)
    before = _rss_kib(front)
    lines = 100_000  # of 105 bytes: about 10 MiB
    job_id = server.start_job({"type": "print", "lines": lines, "lineBytes": 104})
    answered = []
    peak = [before]
    done = threading.Event()

    def watch_memory() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kib(front))
            done.wait(0.01)

    watcher = threading.Thread(target=watch_memory)
    watcher.start()
    try:
        # The API answers while the job prints (each answer is a status read).
        while server.status(job_id)["status"] in ("pending", "running"):
            answered.append(True)
    finally:
        done.set()
        watcher.join()
    assert server.status(job_id)["status"] == "completed"
    assert answered, "no status answered while it ran"

    def ended() -> dict[str, Any] | None:  # one page holds it all: one read, no race
        page = _page(server, job_id, limit=10_000)
        last = page["lines"][-1]["text"] if page["lines"] else ""
        return page if last.startswith(f"line {lines:06d}") else None

    page = wait_until(ended)
    texts = [line["text"] for line in page["lines"]]
    assert page["droppedLines"] > 0
    marker = page["lines"][0]
    assert "dropped" in marker["text"]
    assert marker["line"] == page["lines"][1]["line"] - 1  # numbers keep counting
    kept = sum(len(t.encode()) + 1 for t in texts[1:])
    assert kept <= bound
    assert kept + page["droppedBytes"] == lines * 105
    assert page["droppedLines"] + len(texts) - 1 == lines
    # The front held a bounded batch, never the 10 MiB (nor its lines as objects).
    assert peak[0] - before < 8 * 1024


# -- the store, on both databases --------------------------------------------------


def _check_store(url: str) -> None:
    from supervisor.store import Store

    Store(url).migrate()
    db = connect(url)
    try:
        db.execute(
            "INSERT INTO jobs (id, type, status, config, progress, created_at, updated_at)"
            " VALUES ('j1', 'quick', 'running', '{}', '{}', 0, 0)"
        )

        def line(i: int) -> Line:
            return Line(i, "stdout", None, f"{i:03d}")  # 4 bytes with its newline

        job_logs.append(db, "j1", [line(i) for i in range(1, 6)], 0, 0, 12)
        page = job_logs.page(db, "j1", 0, 100)
        assert [x.text for x in page.lines][1:] == ["003", "004", "005"]
        assert (page.lines[0].line, page.dropped_lines, page.dropped_bytes) == (2, 2, 8)
        # Skipped in the front: numbered, counted, never stored.
        job_logs.append(db, "j1", [line(9)], 3, 12, 12)
        page = job_logs.page(db, "j1", 0, 100)
        assert [(x.line, x.text) for x in page.lines[1:]] == [(4, "004"), (5, "005"), (9, "009")]
        assert (page.lines[0].line, page.dropped_lines, page.dropped_bytes) == (3, 6, 24)
        assert "6 lines" in page.lines[0].text
        # Past the marker, no marker; a page of one is the marker alone.
        assert [x.line for x in job_logs.page(db, "j1", 3, 100).lines] == [4, 5, 9]
        assert [x.line for x in job_logs.page(db, "j1", 0, 1).lines] == [3]
        assert job_logs.page(db, "j1", 9, 100).lines == []
        db.execute("DELETE FROM jobs WHERE id = 'j1'")
        assert job_logs.prune_orphans(db) == 1
        assert db.one("SELECT COUNT(*) FROM job_logs") == (0,)
    finally:
        db.close()


def test_the_log_store_on_sqlite(tmp_path: Path) -> None:
    _check_store(f"sqlite:///{tmp_path / 'logs.db'}")


@pytest.mark.postgres
def test_the_log_store_on_postgresql(pg_url: str) -> None:
    _check_store(pg_url)


# -- the client and the CLI --------------------------------------------------------------


def test_the_client_pages_and_follows_logs(server: Server) -> None:
    from tests.test_client import client_for

    with client_for(server) as client:
        job_id = client.start("print", lines=5).job_id
        followed = [line.text for line in client.follow_logs(job_id, poll_s=0.05)]
        assert followed == [f"line {i:06d} xxxxxxxx" for i in range(1, 6)]
        page = client.logs(job_id, after=3)
        assert [line.line for line in page.lines] == [4, 5]


def test_jobsup_logs_prints_numbered_lines(server: Server) -> None:
    from tests.test_client import jobsup

    job_id = server.start_job({"type": "end"})
    server.wait_status(job_id, "completed")
    wait_until(lambda: len(_texts(server, job_id)) == 3)
    result = jobsup(server, "logs", job_id)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    assert any(line.split()[2] == "log/warning" for line in lines)
    assert lines[0].split()[0] == "1"
    followed = jobsup(server, "logs", job_id, "--follow", "--after", "1")
    assert followed.stdout.splitlines() == lines[1:]


@pytest.mark.postgres
def test_another_instance_serves_a_running_jobs_logs_and_resources(
    pg_url: str, make_server: Callable[..., Server]
) -> None:
    owner = make_server(DATABASE_URL=pg_url)
    job_id = owner.start_job({"type": "print", "lines": 3, "wait": True})
    other = make_server(DATABASE_URL=pg_url)
    wait_until(lambda: len(_texts(other, job_id)) == 3)  # from the database, while it runs
    assert other.status(job_id)["status"] == "running"
    owner.client.post(f"/admin/jobs/{job_id}/cancel")
    resources = wait_until(lambda: other.status(job_id).get("resources"), timeout=30)
    assert resources["ended"] == "cooperative"


# -- the front's side, in process ------------------------------------------------------------


def test_a_job_log_cuts_lines_bounds_its_batch_and_keeps_the_stderr_tail() -> None:
    import asyncio
    import os

    from supervisor import joblog

    async def scenario() -> None:
        writes: list[tuple[Any, ...]] = []
        release = asyncio.get_running_loop().create_future()

        def write(fn: Any, *args: Any) -> asyncio.Future[Any]:
            writes.append(args)
            return release  # the first write stays under way while the rest is added

        log = joblog.JobLog("j", write, limit=1000)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        for fd in (out_r, err_r):
            os.set_blocking(fd, False)
        log.watch(out_r, err_r)
        long = b"y" * (joblog.MAX_LINE_BYTES + 10)
        os.write(out_w, b"one\r\nnul\x00here\n" + long + b"\npartial")
        os.write(err_w, b"bad \xff byte\n")
        os.close(out_w)
        os.close(err_w)
        log.flush()  # nothing read yet: the loop has not turned
        for _ in range(100):
            await asyncio.sleep(0)
            if not log._fds:
                break
        log.flush()
        (job_id, lines, skipped, skipped_bytes, limit) = writes[0]
        assert (job_id, limit) == ("j", 1000)
        # Over the bound: only the newest lines stay, the rest counted as skipped.
        texts = [line.text for line in lines]
        assert "partial" in texts  # the unended last line, at EOF
        assert skipped >= 3
        assert skipped_bytes > joblog.MAX_LINE_BYTES
        assert sum(line.size for line in lines) <= 1000
        assert log.stderr_tail() == "bad \ufffd byte"
        # A write under way: the next batch waits for it, then goes.
        log.add("log", "after", "info")
        log.flush()
        assert len(writes) == 1
        release.set_result(None)
        log.close()
        await asyncio.sleep(0)
        assert [line.text for line in writes[-1][1]] == ["after"]
        for fd in (out_r, err_r):
            os.close(fd)

    asyncio.run(scenario())


def test_a_job_log_keeps_each_line_whole_under_the_bound() -> None:
    import asyncio

    from supervisor import joblog

    async def scenario() -> None:
        writes: list[tuple[Any, ...]] = []

        def write(fn: Any, *args: Any) -> asyncio.Future[Any]:
            writes.append(args)
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

        log = joblog.JobLog("j", write, limit=10_000)
        log._feed("stdout", b"one\r\nnul\x00here\n" + b"z" * (joblog.MAX_LINE_BYTES + 5) + b"\n")
        log.close()
        texts = [line.text for line in writes[0][1]]
        assert texts == ["one", "nul\ufffdhere", "z" * joblog.MAX_LINE_BYTES, "z" * 5]
        assert writes[0][2:4] == (0, 0)

    asyncio.run(scenario())
