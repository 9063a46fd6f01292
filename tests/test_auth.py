"""Access from outside: tokens and roles, the generated token, sessions, Host and CORS."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, OPERATOR_TOKEN, ROOT, VIEWER_TOKEN, Server

SLEEPY = {"type": "sleepy", "steps": 1, "stepMs": 60_000}
GROUP = {"name": "g", "members": []}


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def anonymous(server: Server, **kwargs: Any) -> httpx.Client:
    """A client without the server's token."""
    return httpx.Client(base_url=server.url, timeout=30, **kwargs)


# (method, path, body) of every route, with the least role that may call it.
ROUTES: list[tuple[str, str, Any, str]] = [
    ("GET", "/admin/jobs", None, "viewer"),
    ("GET", "/admin/jobs/nope/status", None, "viewer"),
    ("GET", "/admin/jobs/nope/result/items", None, "viewer"),
    ("GET", "/admin/groups/g", None, "viewer"),
    ("GET", "/admin/groups/g/members", None, "viewer"),
    ("GET", "/admin/groups/g/removals", None, "viewer"),
    ("GET", "/admin/session", None, "viewer"),
    ("POST", "/admin/jobs/start", {"type": "quick"}, "operator"),
    ("POST", "/admin/jobs/nope/cancel", None, "operator"),
    ("PUT", "/admin/groups/g", GROUP, "admin"),
    ("PUT", "/admin/groups/g/whitelist", {"whatsappIds": []}, "admin"),
    ("GET", "/admin/audit", None, "admin"),
    ("GET", "/admin/groups", None, "viewer"),
    ("GET", "/admin/job-types", None, "viewer"),
    ("POST", "/admin/jobs/nope/rerun", None, "operator"),
    ("DELETE", "/admin/jobs/nope", None, "operator"),
    ("GET", "/admin/groups/g/whitelist", None, "admin"),
    ("DELETE", "/admin/groups/nope", None, "admin"),
]
RANK = {"viewer": 1, "operator": 2, "admin": 3}
TOKEN_OF = {"viewer": VIEWER_TOKEN, "operator": OPERATOR_TOKEN, "admin": ADMIN_TOKEN}


def test_every_route_needs_a_token_its_role_allows(server: Server) -> None:
    with anonymous(server) as client:
        for method, path, body, least in ROUTES:
            for headers in ({}, bearer("not-a-token-we-know-0123"), {"authorization": "Basic x"}):
                refused = client.request(method, path, json=body, headers=headers)
                assert refused.status_code == 401, (method, path, refused.text)
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert refused.json()["error"]["code"] == "unauthorized"
            for role, token in TOKEN_OF.items():
                answer = client.request(method, path, json=body, headers=bearer(token))
                if RANK[role] < RANK[least]:
                    assert answer.status_code == 403, (role, method, path, answer.text)
                    error = answer.json()["error"]
                    assert error["code"] == "forbidden"
                    assert least in error["message"]
                else:
                    assert answer.status_code not in (401, 403), (role, method, path)
        # The probes are open, and say that authentication is on.
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["auth"] == "on"
        assert client.get("/readyz").status_code == 200


def test_unknown_paths_are_401_until_authenticated(server: Server) -> None:
    with anonymous(server) as client:
        for path in ("/admin/nope", "/nope", "/admin/jobs/x/y/z"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers=bearer(VIEWER_TOKEN)).status_code == 404
        # A wrong method on a known path: its 405 once the caller is known.
        assert client.delete("/admin/jobs").status_code == 401
        assert client.delete("/admin/jobs", headers=bearer(VIEWER_TOKEN)).status_code == 405


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "supervisor", "serve"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("tokens", "named"),
    [
        ("admin:short-secret", "entry 1"),
        ("ops:root:secret-0123456789abcdef", "entry 1 (ops)"),
        ("viewer:secret-0123456789abcdef,ci:admin:secret 0123456789abcdef", "entry 2 (ci)"),
        ("a:b:c:secret-0123456789abcdef", "entry 1"),
        ("admin:secret-0123456789abcdef,viewer:secret-0123456789abcdef", "entry 2"),
        ("x:admin:secret-0123456789abcdef,x:viewer:secret-0123456789abcdeg", "entry 2 (x)"),
    ],
)
def test_a_bad_token_entry_refuses_to_start_without_echoing_it(
    sqlite_url: str, tokens: str, named: str
) -> None:
    result = _serve({"DATABASE_URL": sqlite_url, "JOBSUP_TOKENS": tokens, "PORT": "1"})
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert f"JOBSUP_TOKENS {named}" in output
    assert "secret" not in output


def _generated_token(server: Server) -> str:
    found = re.search(r"shown this once:\s+(\S+)\s", server.log())
    assert found is not None, server.log()
    return found.group(1)


def test_without_tokens_an_admin_token_is_generated_once_and_kept(make_server: Any) -> None:
    first = make_server(JOBSUP_TOKENS="")
    token = _generated_token(first)
    assert len(token) >= 32
    with anonymous(first) as client:
        assert client.get("/admin/jobs").status_code == 401
        assert client.get("/admin/jobs", headers=bearer(token)).status_code == 200
        assert client.get("/admin/jobs", headers=bearer(ADMIN_TOKEN)).status_code == 401
    first.stop()
    # A restart on the same database accepts the same token and does not show it again.
    second = make_server(JOBSUP_TOKENS="")
    assert token not in second.log()
    assert fingerprint(token) in second.log()
    with anonymous(second) as client:
        whoami = client.get("/admin/session", headers=bearer(token))
        assert whoami.json() == {"name": "admin", "role": "admin"}


def test_token_reset_replaces_the_generated_token(make_server: Any, sqlite_url: str) -> None:
    first = make_server(JOBSUP_TOKENS="")
    old = _generated_token(first)
    first.stop()
    reset = subprocess.run(
        [sys.executable, "-m", "supervisor", "token", "reset"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": sqlite_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert reset.returncode == 0, reset.stderr
    new = reset.stdout.strip().splitlines()[-1].strip()
    second = make_server(JOBSUP_TOKENS="")
    with anonymous(second) as client:
        assert client.get("/admin/jobs", headers=bearer(new)).status_code == 200
        assert client.get("/admin/jobs", headers=bearer(old)).status_code == 401


def test_auth_off_is_open_and_says_so(make_server: Any) -> None:
    server = make_server(JOBSUP_AUTH="off")
    with anonymous(server) as client:
        assert client.get("/healthz").json()["auth"] == "off"
        assert client.get("/admin/jobs").status_code == 200
        started = client.post("/admin/jobs/start", json={"type": "quick"})
        assert started.status_code == 202
    job = server.wait_status(started.json()["jobId"], "completed")
    assert job["requestedBy"] == {"name": "anonymous", "role": "admin", "fingerprint": ""}
    assert "every route is open" in server.log()


def test_an_unknown_host_is_refused_but_the_probes_answer(server: Server) -> None:
    evil = {"host": "rebound.example"}
    refused = server.client.get("/admin/jobs", headers=evil)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_host"
    assert server.client.get("/healthz", headers=evil).status_code == 200
    assert server.client.get("/admin/jobs", headers={"host": "localhost"}).status_code == 200


def test_allowed_hosts_are_configurable(make_server: Any) -> None:
    server = make_server(JOBSUP_ALLOWED_HOSTS="jobs.example,*.internal.example")
    for host, status in [
        ("jobs.example", 200),
        ("a.internal.example", 200),
        ("127.0.0.1", 400),
        ("jobs.example.evil", 400),
    ]:
        answer = server.client.get("/admin/jobs", headers={"host": host})
        assert answer.status_code == status, host


def test_no_cors_headers_unless_origins_are_named(make_server: Any) -> None:
    preflight = {
        "origin": "https://ui.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type",
    }
    closed = make_server()
    answer = closed.client.options("/admin/jobs/start", headers=preflight)
    assert "access-control-allow-origin" not in answer.headers
    answer = closed.client.get("/admin/jobs", headers={"origin": "https://ui.example"})
    assert answer.status_code == 200
    assert "access-control-allow-origin" not in answer.headers
    closed.stop()  # one server per SQLite file

    open_to_ui = make_server(JOBSUP_CORS_ORIGINS="https://ui.example")
    with anonymous(open_to_ui) as client:
        answer = client.options("/admin/jobs/start", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://ui.example"
        other = client.options(
            "/admin/jobs/start", headers={**preflight, "origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in other.headers


def test_a_cross_origin_text_plain_post_changes_nothing(server: Server) -> None:
    job_id = server.start_job(SLEEPY)
    server.wait_status(job_id, "running")
    # What any web page can make a browser send, with no credential of ours.
    with anonymous(server) as browser:
        forged = browser.post(
            f"/admin/jobs/{job_id}/cancel",
            content=b"{}",
            headers={"content-type": "text/plain", "origin": "https://evil.example"},
        )
        assert forged.status_code == 401
        assert "access-control-allow-origin" not in forged.headers
        forged = browser.post(
            "/admin/jobs/start",
            content=b'{"type": "quick"}',
            headers={"content-type": "text/plain", "origin": "https://evil.example"},
        )
        assert forged.status_code == 401
    assert server.status(job_id)["status"] == "running"
    assert len(server.client.get("/admin/jobs").json()) == 1


def _login(client: httpx.Client, token: str) -> httpx.Response:
    return client.post("/admin/session", json={"token": token})


def test_a_session_cookie_for_browsers(server: Server) -> None:
    with anonymous(server) as browser:
        assert browser.get("/admin/session").status_code == 401
        refused = _login(browser, "not-a-token-we-know-0123")
        assert refused.status_code == 401
        assert "not-a-token" not in refused.text
        assert "set-cookie" not in refused.headers

        login = _login(browser, OPERATOR_TOKEN)
        assert login.status_code == 200, login.text
        assert login.json() == {"name": "operator", "role": "operator"}
        cookie = login.headers["set-cookie"]
        assert cookie.startswith("jobsup_session=")
        attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "path", "samesite", "max-age"} <= attributes
        assert "samesite=strict" in cookie.lower()
        assert "path=/" in cookie.lower()
        assert "secure" not in attributes  # plain http here
        assert OPERATOR_TOKEN not in cookie
        assert fingerprint(OPERATOR_TOKEN) not in cookie

        assert browser.get("/admin/session").json() == {"name": "operator", "role": "operator"}
        assert browser.get("/admin/jobs").status_code == 200
        assert browser.put("/admin/groups/g", json=GROUP).status_code == 403  # its role

        # A state change with the cookie needs the server's own Origin.
        own = {"origin": server.url}
        for headers in ({}, {"origin": "https://evil.example"}, {"origin": "null"}):
            forged = browser.post("/admin/jobs/start", json={"type": "quick"}, headers=headers)
            assert forged.status_code == 403, headers
            assert forged.json()["error"]["code"] == "csrf"
        started = browser.post("/admin/jobs/start", json={"type": "quick"}, headers=own)
        assert started.status_code == 202
        job = server.wait_status(started.json()["jobId"], "completed")
        assert job["requestedBy"]["name"] == "operator"

        assert (
            browser.delete("/admin/session", headers={"origin": "https://evil.example"}).status_code
            == 403
        )
        logout = browser.delete("/admin/session", headers=own)
        assert logout.status_code == 204
        assert "jobsup_session=" in logout.headers["set-cookie"]
        assert browser.get("/admin/session").status_code == 401

    # A forged or altered cookie is no credential.
    with anonymous(server) as browser:
        value = _login(browser, VIEWER_TOKEN).cookies["jobsup_session"]
        browser.cookies.clear()
        session_id, expires, signature = value.split(".")
        for forged_value in (
            f"{session_id}.{int(expires) + 3600}.{signature}",
            f"{session_id}.{expires}.{'0' * len(signature)}",
            "garbage",
        ):
            answer = browser.get(
                "/admin/jobs", headers={"cookie": f"jobsup_session={forged_value}"}
            )
            assert answer.status_code == 401


def test_session_cookie_is_secure_behind_an_https_proxy(make_server: Any) -> None:
    trusted = make_server(JOBSUP_TRUST_PROXY="true")
    with anonymous(trusted) as browser:
        login = browser.post(
            "/admin/session",
            json={"token": VIEWER_TOKEN},
            headers={"x-forwarded-proto": "https"},
        )
        assert login.status_code == 200
        assert "secure" in login.headers["set-cookie"].lower()
    trusted.stop()  # one server per SQLite file
    untrusted = make_server()
    with anonymous(untrusted) as browser:
        login = browser.post(
            "/admin/session",
            json={"token": VIEWER_TOKEN},
            headers={"x-forwarded-proto": "https"},
        )
        assert "secure" not in login.headers["set-cookie"].lower()


def test_a_bearer_token_needs_no_origin(server: Server) -> None:
    answer = server.client.post(
        "/admin/jobs/start", json={"type": "quick"}, headers={"origin": "https://elsewhere"}
    )
    assert answer.status_code == 202


def test_a_session_survives_a_restart(make_server: Any) -> None:
    first = make_server()
    with anonymous(first) as browser:
        assert _login(browser, VIEWER_TOKEN).status_code == 200
        cookie = browser.cookies["jobsup_session"]
    first.stop()
    second = make_server()  # the same database: the same signing key
    with anonymous(second) as browser:
        answer = browser.get("/admin/session", headers={"cookie": f"jobsup_session={cookie}"})
        assert answer.json() == {"name": "viewer", "role": "viewer"}
    second.stop()
    # Removing its token from JOBSUP_TOKENS ends the session.
    tokens = f"admin:admin:{ADMIN_TOKEN}"
    third = make_server(JOBSUP_TOKENS=tokens)
    with anonymous(third) as browser:
        answer = browser.get("/admin/session", headers={"cookie": f"jobsup_session={cookie}"})
        assert answer.status_code == 401


def test_the_metrics_token_reads_metrics_and_nothing_else(make_server: Any) -> None:
    scraper = "scraper-token-0123456789"
    server = make_server(JOBSUP_METRICS_TOKEN=scraper)
    with anonymous(server) as client:
        assert client.get("/metrics", headers=bearer(scraper)).status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(VIEWER_TOKEN)).status_code == 200
        assert client.get("/admin/jobs", headers=bearer(scraper)).status_code == 401
