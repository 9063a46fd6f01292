"""``jobsup demo``: serve, load a sample group, dry-run a removal, show its progress.

It talks to its own server over HTTP, as any client would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from supervisor.credentials import new_token
from supervisor.settings import Settings
from supervisor.testing import admin_token

GROUP = "120363000000000001@g.us"
DAY_MS = 24 * 3600 * 1000


def sample_group(seed: int = 7, size: int = 60) -> dict[str, Any]:
    rng = random.Random(seed)
    today = datetime.now(UTC)
    members = []
    for i in range(size):
        joined = today - timedelta(days=rng.randint(30, 400))
        active = None if rng.random() < 0.2 else today - timedelta(days=rng.randint(0, 120))
        members.append(
            {
                "whatsappId": f"5511{90000000 + i:08d}@s.whatsapp.net",
                "isAdmin": i < 2,
                "joinedAt": joined.isoformat(),
                "lastActiveAt": active.isoformat() if active else None,
            }
        )
    return {"name": "Neighbourhood garden (demo)", "members": members}


def _call(base: str, token: str | None, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("content-type", "application/json")
    if token is not None:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


async def _drive(base: str, token: str | None) -> int:
    def call(*args: Any) -> Any:
        return asyncio.to_thread(_call, base, token, *args)

    group = await call("PUT", f"/admin/groups/{GROUP}", sample_group())
    print(f"loaded group {GROUP}: {group['memberCount']} members")
    started = await call(
        "POST",
        "/admin/jobs/start",
        {
            "type": "removal_workflow",
            "groupWaId": GROUP,
            "batchSize": 5,
            "delayMs": 10_000,
            "dryRun": True,
            "inactivityWindowMs": 60 * DAY_MS,
        },
    )
    job_id = started["jobId"]
    print(f"started dry-run removal_workflow {job_id}")
    last = None
    while True:
        job = await call("GET", f"/admin/jobs/{job_id}/status")
        progress = job["progress"]
        line = (
            f"  [{job['status']:>9}] {progress.get('phase') or '-'}: "
            f"{progress['processed']}/{progress.get('total') or '?'} "
            f"{progress.get('message') or ''}"
        )
        if line != last:
            print(line)
            last = line
        if job["status"] in ("completed", "failed", "cancelled"):
            break
        await asyncio.sleep(0.2)  # a client polling its job; the server pushes nothing here
    result = job.get("result") or {}
    would = result.get("wouldRemoveWhatsappIds", [])
    print(
        f"{job['status']}: {len(would)} members inactive for 60 days would be removed "
        "(dry run: nothing changed)"
    )
    for whatsapp_id in would[:10]:
        print(f"  {whatsapp_id}")
    if len(would) > 10:
        print(f"  ... and {len(would) - 10} more: GET {base}/admin/jobs/{job_id}/status")
    return 0 if job["status"] == "completed" else 1


async def _main(settings: Settings) -> int:
    from supervisor.app import create_app
    from supervisor.server import make_server

    token = None
    if settings.auth and not settings.tokens:
        # The demo's own client gets a token of its own, good for this run only.
        token = new_token()
        settings = dataclasses.replace(settings, tokens=f"demo:admin:{token}")
    elif settings.auth:
        token = admin_token(settings.tokens)
    # The command checked the port, the database and the job modules already;
    # a failure still possible here is a StartupFailed, with its exit code.
    server = make_server(create_app(settings), settings, log_level="warning")
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        if serving.done():
            serving.result()  # raises what stopped the startup
            return 1
        await asyncio.sleep(0.05)
    print(f"jobsup serving on http://{settings.host}:{settings.port} ({settings.database_url})")
    try:
        return await _drive(f"http://{settings.host}:{settings.port}", token)
    finally:
        server.should_exit = True
        await serving


def run_demo(settings: Settings) -> int:
    return asyncio.run(_main(settings))
