"""The dashboard in a real browser: Debian's chromium driven by Playwright, against a real server.

Playwright never downloads a browser here: it launches the system chromium.
Set UPDATE_SCREENSHOTS=1 to save the screenshots in docs/img/ as well.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from tests.conftest import ROOT, Server, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = os.environ.get("UPDATE_SCREENSHOTS") == "1"
GROUP = "120363000000000001@g.us"
TIMEOUT_MS = 15_000
# A browser far from UTC, so that times shown in its own zone are told apart.
BROWSER: dict[str, Any] = {
    "viewport": {"width": 1280, "height": 800},
    "locale": "en-US",
    "timezone_id": "America/Sao_Paulo",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[Server], Page]]:
    """A fresh browser session on the server's dashboard, signed in; checked for
    script errors and for requests to any other host when the test ends."""
    contexts = []
    problems: list[str] = []

    def open_on(server: Server) -> Page:
        context = browser.new_context(**BROWSER)
        contexts.append(context)
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"script error: {error}"))

        def same_host(request: Request) -> None:
            if not request.url.startswith((server.url + "/", "data:")):
                problems.append(f"request to another host: {request.url}")

        page.on("request", same_host)
        page.goto(server.url + "/")  # redirected to /admin/
        expect(page).to_have_url(server.url + "/admin/")
        sign_in(page, server)
        return page

    yield open_on
    for context in contexts:
        context.close()
    assert problems == []


def sign_in(page: Page, server: Server) -> None:
    """Type the server's token into the sign-in form, when the server asks for one."""
    authorization = server.client.headers.get("authorization")
    if authorization:
        token = authorization.removeprefix("Bearer ")
        form = page.locator("#sign-in")
        expect(form).to_be_visible()
        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#session")).to_be_visible()
    expect(page.locator("#main")).to_be_visible()
    expect(page.locator("#connection")).to_have_text("updates: live")


def put_group(server: Server, members: list[dict[str, Any]]) -> None:
    response = server.client.put(
        f"/admin/groups/{GROUP}", json={"name": "Garden", "members": members}
    )
    assert response.status_code == 200, response.text


def inactive(n: int) -> list[dict[str, Any]]:
    return [
        {"whatsappId": f"55119{i:08d}@s.whatsapp.net", "joinedAt": "2020-01-01T00:00:00Z"}
        for i in range(n)
    ]


def fill_start_form(page: Page, job_type: str, config: dict[str, Any]) -> None:
    """Pick the type, then fill the fields the page built from its config's schema."""
    page.get_by_label("Type", exact=True).select_option(job_type)
    form = page.locator("#start-form")
    for name, value in config.items():
        field = form.get_by_label(name, exact=True)
        if isinstance(value, bool):
            field.set_checked(value)
        else:
            field.fill(str(value))


def shot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=ROOT / "docs" / "img" / name)


def test_start_watch_and_cancel_a_job(
    make_server: Callable[..., Server], open_page: Callable[[Server], Page]
) -> None:
    server = make_server()
    put_group(server, inactive(40))
    page = open_page(server)
    page.evaluate("window.notReloaded = true")
    page.get_by_role("link", name="Start a job").click()

    config = {
        "groupWaId": GROUP,
        "batchSize": 0,
        "delayMs": 250,
        "dryRun": False,
        "inactivityWindowMs": 86_400_000,
    }
    fill_start_form(page, "removal_workflow", config)
    page.get_by_role("button", name="Start").click()
    # The API's own message, right under the field it names.
    error = page.locator("#start-form [data-error-for='batchSize']")
    expect(error).to_have_text(re.compile(r"batchSize: Expected `int` >= 1"))
    expect(page.locator("#start-form [aria-invalid='true']")).to_have_count(1)

    fill_start_form(page, "removal_workflow", {**config, "batchSize": 1})
    page.get_by_role("button", name="Start").click()
    expect(page).to_have_url(re.compile(r"#/job/"))
    job_id = page.url.rsplit("/", 1)[1]
    detail = page.locator("#view-job")
    expect(detail.locator(".badge")).to_have_text("running")

    # Progress moves, in the job's panel and in its row of the list, without a reload.
    row = page.locator(f"#jobs-body tr[data-job-id='{job_id}']")
    expect(row.locator(".badge")).to_have_text("running")
    page.wait_for_function(
        """id => {
          const bar = document.querySelector(`#jobs-body tr[data-job-id="${id}"] progress`);
          const open = document.querySelector('#view-job progress');
          return bar && open && bar.value >= 3 && open.value >= 3 && bar.max === 40;
        }""",
        arg=job_id,
    )
    expect(detail.locator("[data-list='removedWhatsappIds'] h4")).not_to_have_text(
        "removedWhatsappIds (0)"
    )
    shot(page, "dashboard.png")

    page.once("dialog", lambda dialog: dialog.accept())
    detail.get_by_role("button", name="Cancel job").click()
    expect(detail.locator(".badge")).to_have_text("cancelled")
    expect(row.locator(".badge")).to_have_text("cancelled")
    # Seen live: the stream's cancelling, then the final state.
    expect(detail.locator(".trail")).to_have_text(re.compile(r"running → cancelling → cancelled$"))
    expect(detail).to_contain_text("user")  # the cancel's reason, with its timings
    assert server.status(job_id)["status"] == "cancelled"
    assert page.evaluate("window.notReloaded") is True


def test_filters_and_paging(
    make_server: Callable[..., Server], open_page: Callable[[Server], Page]
) -> None:
    server = make_server()
    ids = [server.start_job({"type": "quick", "value": n}) for n in range(30)]
    for job_id in ids:
        server.wait_status(job_id, "completed")
    failed = server.start_job({"type": "crash"})
    server.wait_status(failed, "failed")
    page = open_page(server)

    rows = page.locator("#jobs-body tr")
    expect(rows).to_have_count(25)
    page.get_by_role("button", name="Older →").click()
    expect(rows).to_have_count(6)
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    page.get_by_role("button", name="Newest").click()
    expect(rows.first).to_have_attribute("data-job-id", failed)
    # Shown in the browser's zone (UTC-3), not as the API's UTC.
    created = datetime.fromisoformat(server.status(failed)["createdAt"])
    local = created.astimezone(timezone(timedelta(hours=-3)))
    shown = f"{local:%-m/%-d/%y}, {local:%-I:%M:%S %p}"
    expect(rows.first.locator("td").nth(3)).to_have_text(shown)

    page.get_by_label("Filter by type").fill("crash")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(1)
    page.get_by_label("Filter by type").fill("")
    page.get_by_label("Filter by status").select_option("failed")
    expect(rows).to_have_count(1)
    rows.first.click()
    detail = page.locator("#view-job")
    expect(detail.locator(".traceback")).to_contain_text("RuntimeError: the job broke")

    # Run it again: a new job with its config, which fails the same way.
    detail.get_by_role("button", name="Run again").click()
    expect(page).not_to_have_url(re.compile(f"#/job/{failed}$"))
    rerun = page.url.rsplit("/", 1)[1]
    expect(detail.locator(".badge")).to_have_text("failed")
    expect(page.locator(f"#jobs-body tr[data-job-id='{rerun}']")).to_be_visible()
    assert server.status(rerun)["rerunOf"] == failed

    # Delete it, with a confirm: it leaves the list and the server.
    page.once("dialog", lambda dialog: dialog.accept())
    detail.get_by_role("button", name="Delete").click()
    expect(page.locator(f"#jobs-body tr[data-job-id='{rerun}']")).to_have_count(0)
    assert server.client.get(f"/admin/jobs/{rerun}/status").status_code == 404


def test_group_page(
    make_server: Callable[..., Server], open_page: Callable[[Server], Page]
) -> None:
    server = make_server()
    members = [
        {"whatsappId": "admin@s.whatsapp.net", "isAdmin": True, "joinedAt": "2020-01-01T00:00:00Z"},
        {"whatsappId": "kept@s.whatsapp.net", "joinedAt": "2020-01-01T00:00:00Z"},
        {
            "whatsappId": "active@s.whatsapp.net",
            "joinedAt": "2020-01-01T00:00:00Z",
            "lastActiveAt": "2099-01-01T00:00:00Z",
        },
        *inactive(3),
    ]
    put_group(server, members)
    response = server.client.put(
        f"/admin/groups/{GROUP}/whitelist", json={"whatsappIds": ["kept@s.whatsapp.net"]}
    )
    assert response.status_code == 200, response.text
    # One removal, then a long pause: the others stay queued.
    job_id = server.start_job(
        {
            "type": "removal_workflow",
            "groupWaId": GROUP,
            "batchSize": 1,
            "delayMs": 60_000,
            "dryRun": False,
            "inactivityWindowMs": 86_400_000,
        }
    )
    server.wait_status(job_id, "running")
    wait_until(lambda: server.client.get(f"/admin/groups/{GROUP}/removals").json())
    assert server.client.post(f"/admin/jobs/{job_id}/cancel").status_code == 200

    page = open_page(server)
    page.get_by_role("link", name="Groups").click()
    page.get_by_label("Group id").fill(GROUP)
    page.get_by_role("button", name="Show").click()
    group = page.locator("#group-detail")
    expect(group).to_contain_text("Garden")

    def state_of(whatsapp_id: str):
        return group.locator(f"#group-members tr[data-member='{whatsapp_id}'] .flags")

    expect(state_of("admin@s.whatsapp.net")).to_have_text("admin")
    expect(state_of("kept@s.whatsapp.net")).to_have_text("whitelisted")
    expect(state_of("active@s.whatsapp.net")).to_have_text("active")
    flags = group.locator("#group-members tr[data-member^='55119'] .flags")
    expect(flags).to_have_count(3)
    expect(flags.filter(has_text=re.compile(r"^removed "))).to_have_count(1)
    expect(flags.filter(has_text=re.compile(r"^queued, inactive$"))).to_have_count(2)
    expect(group.locator("#group-whitelist")).to_have_text("kept@s.whatsapp.net")
    history = group.locator("#group-removals tbody tr")
    expect(history).to_have_count(1)
    expect(history.first).to_contain_text("SUCCESS")
    shot(page, "group.png")

    # From the history to the job that made the removal.
    history.first.get_by_role("link").click()
    expect(page.locator("#view-job .badge")).to_have_text("cancelled")


def test_sign_in_once_per_browser_session(
    make_server: Callable[..., Server], browser: Browser
) -> None:
    server = make_server()
    authorization = server.client.headers.get("authorization")
    context = browser.new_context(**BROWSER)
    try:
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(server.url + "/admin/")
        if not authorization:  # a server without tokens is open: nobody signs in
            expect(page.locator("#main")).to_be_visible()
            expect(page.locator("#sign-in")).to_be_hidden()
            return
        token = authorization.removeprefix("Bearer ")
        expect(page.locator("#sign-in")).to_be_visible()
        expect(page.locator("#main")).to_be_hidden()

        page.get_by_label("Token").fill("not-a-token-of-this-server")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#sign-in-error")).to_contain_text("token")
        expect(page.get_by_label("Token")).to_have_value("")

        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#session-who")).to_contain_text("admin")
        expect(page.locator("#connection")).to_have_text("updates: live")
        # The cookie is the credential: never the token in a URL or in storage.
        stored = page.evaluate("JSON.stringify([localStorage, sessionStorage, location.href])")
        assert token not in stored
        cookies = {c["name"]: c for c in context.cookies()}
        assert cookies["jobsup_session"]["httpOnly"] is True
        assert cookies["jobsup_session"]["sameSite"] == "Strict"

        page.reload()  # the same browser session: no token asked again
        expect(page.locator("#main")).to_be_visible()
        expect(page.locator("#sign-in")).to_be_hidden()

        page.get_by_role("button", name="Sign out").click()
        expect(page.locator("#sign-in")).to_be_visible()
        page.reload()
        expect(page.locator("#sign-in")).to_be_visible()
    finally:
        context.close()


def test_approve_a_job_awaiting_approval(
    server: Server, open_page: Callable[[Server], Page]
) -> None:
    job_id = server.start_job({"type": "quick", "value": 7, "approval": True})
    page = open_page(server)
    page.goto(f"{server.url}/admin/#/job/{job_id}")
    detail = page.locator("#view-job")
    expect(detail.locator(".badge")).to_have_text("awaiting_approval")
    expect(detail).to_contain_text("approval expires")
    page.once("dialog", lambda dialog: dialog.accept())
    detail.get_by_role("button", name="Approve").click()
    expect(detail.locator(".badge")).to_have_text("completed")
    expect(detail).to_contain_text("by admin")
    assert server.status(job_id)["approval"]["approvedBy"]["name"] == "admin"


def test_a_jobs_panel_shows_how_it_ended_and_its_log(
    server: Server, open_page: Callable[[Server], Page]
) -> None:
    job_id = server.start_job({"type": "end"})
    server.wait_status(job_id, "completed")
    page = open_page(server)
    page.evaluate(f"location.hash = '#/job/{job_id}'")
    detail = page.locator("#view-job")
    expect(detail.locator(".badge")).to_have_text("completed")
    log = detail.locator("#job-log-lines")
    expect(log).to_contain_text("stdout a line on stdout")
    expect(log).to_contain_text("stderr a line on stderr")
    expect(log).to_contain_text("log/warning a line through ctx.log")
    # Its resources come a moment after its final state: the panel reads them then.
    expect(detail.locator("[data-stderr-tail]")).to_have_text("a line on stderr")
    expect(detail).to_contain_text("exited")
