"""What a hostile client sends to the lists: cursors that no list gave, repeated
parameters. Each gets a 400 naming the field, never a 500 or a silent guess."""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Server
from tests.helpers import group_body

LISTS = (
    "/admin/groups",
    "/admin/groups/g1/members",
    "/admin/groups/g1/removals",
    "/admin/schedules",
)


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# Not base64url at all (a non-ASCII character), base64 of bytes that are not
# UTF-8, of text holding NUL (which no id holds, and PostgreSQL cannot take), of
# text longer than any id.
BAD_CURSORS = ("💥", "é", b64(b"\xff\xfe"), "AAAA", b64(b"g0\x00"), b64(b"g" * 1000))


def refuses_bad_cursors(server: Server) -> None:
    response = server.client.put("/admin/groups/g1", json=group_body(inactive=3))
    assert response.status_code == 200, response.text
    for path in LISTS:
        for cursor in BAD_CURSORS:
            response = server.client.get(path, params={"before": cursor})
            assert response.status_code == 400, (path, cursor, response.text)
            assert response.json()["error"]["field"] == "before", (path, cursor)
    # A cursor a list gave still pages.
    response = server.client.get("/admin/groups/g1/members", params={"limit": 2})
    cursor = response.headers["X-Next-Before"]
    page = server.client.get("/admin/groups/g1/members", params={"limit": 2, "before": cursor})
    assert page.status_code == 200, page.text
    assert len(page.json()) >= 1
    assert server.client.get("/healthz").status_code == 200


def test_a_cursor_no_list_gave_is_refused_naming_before(server: Server) -> None:
    refuses_bad_cursors(server)


@pytest.mark.postgres
def test_a_cursor_no_list_gave_is_refused_naming_before_on_postgres(
    pg_url: str, make_server: Callable[..., Server]
) -> None:
    refuses_bad_cursors(make_server(DATABASE_URL=pg_url))


def test_a_query_parameter_given_twice_is_refused_naming_it(server: Server) -> None:
    for path, name in (
        ("/admin/jobs?limit=5&limit=6", "limit"),
        ("/admin/groups?limit=5&limit=5", "limit"),
        ("/admin/jobs?status=running&status=failed", "status"),
        ("/admin/jobs/events?type=a&type=b", "type"),
    ):
        response = server.client.get(path)
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["field"] == name, (path, error)
        assert "more than once" in error["message"], error


def test_an_integer_parameter_is_ascii_digits(server: Server) -> None:
    # Python's int() reads all of these; a client sending them has a bug to hear of.
    for raw in ("\uff15", "1_0", "+5", " 5", "5 ", "\u0665"):  # fullwidth, Arabic-Indic 5
        response = server.client.get("/admin/groups", params={"limit": raw})
        assert response.status_code == 400, (raw, response.text)
        assert response.json()["error"]["field"] == "limit"
    huge = server.client.get("/admin/groups", params={"limit": "9" * 5000})
    assert huge.status_code == 400, huge.text
    assert huge.json()["error"]["message"] == "limit: must be between 1 and 1000"
    assert server.client.get("/admin/groups", params={"limit": "0005"}).status_code == 200


def test_the_cli_shows_times_as_the_api_writes_them(server: Server) -> None:
    from tests.test_client import jobsup

    job_id = server.start_job({"type": "quick"})
    created = server.wait_status(job_id, "completed")["createdAt"]
    shown = jobsup(server, "status", job_id)
    assert shown.returncode == 0, shown.stderr
    assert created in shown.stdout, (created, shown.stdout)
    listed = jobsup(server, "list")
    assert created in listed.stdout, (created, listed.stdout)


def test_a_schedule_zone_is_a_zone_name_not_a_host_file(server: Server) -> None:
    """localtime is whatever zone the host is in, posixrules a tzdata build file, right/…
    zones count leap seconds: two instances could read the same schedule differently."""
    assert server.client.put("/admin/groups/g1", json=group_body(inactive=1)).status_code == 200
    job = {"type": "removal_queue", "groupWaId": "g1", "batchSize": 1, "delayMs": 10000}
    for name in ("localtime", "posixrules", "posix/UTC", "right/UTC"):
        body = {"cron": "0 3 * * *", "timezone": name, "job": job | {"dryRun": True}}
        response = server.client.put("/admin/schedules/s1", json=body)
        assert response.status_code == 400, (name, response.text)
        assert response.json()["error"]["field"] == "timezone"
    assert server.client.get("/admin/schedules/s1").status_code == 404
    body = {"cron": "0 3 * * *", "timezone": "Etc/GMT-14", "job": job | {"dryRun": True}}
    assert server.client.put("/admin/schedules/s1", json=body).status_code == 201


@pytest.mark.postgres
def test_a_group_put_imported_and_deleted_at_once_never_answers_5xx(
    pg_url: str, make_server: Callable[..., Server]
) -> None:
    """A delete that finds no group must not delete the one a concurrent put commits
    between its statements, under the members that put wrote (a foreign key error); an
    import must hold the group it creates or finds, or a delete takes it from under
    its members (a foreign key error, or a deadlock read as an outage: 503)."""
    server = make_server(DATABASE_URL=pg_url)
    body = group_body(inactive=20)
    rows = {"members": [{k: m[k] for k in ("whatsappId", "joinedAt")} for m in body["members"]]}
    answers: list[tuple[int, str]] = []

    def hammer(i: int) -> None:
        with httpx.Client(base_url=server.url, headers=server.client.headers, timeout=30) as c:
            for k in range(30):
                if (i + k) % 2:
                    response = c.put("/admin/groups/race", json=body)
                else:
                    response = c.delete("/admin/groups/race")
                answers.append((response.status_code, response.text))
                # An import creates the group too, and merges into it.
                imported = c.post("/admin/groups/imp/members/import", json=rows)
                answers.append((imported.status_code, imported.text))
                answers.append((c.delete("/admin/groups/imp").status_code, "delete imp"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(hammer, range(8)))
    assert {code for code, _ in answers} <= {200, 204, 404}, [a for a in answers if a[0] >= 500][:2]
    summary = server.client.get("/admin/groups/race")
    if summary.status_code == 200:  # the last word was a put: whole
        assert summary.json()["memberCount"] == len(body["members"])
    assert server.client.get("/healthz").status_code == 200
