"""A stale removal child removes nobody: its instance stalls, another runs the job.

PostgreSQL, two real instances. Instance A runs a slow removal (one member
per batch); A is stopped (SIGSTOP) past the node timeout, so B rescues the
job and runs it again. A's child does not know its front is stalled (the
front is alive, its pipes open), so it keeps going until its next batch
checks the fence inside its transaction, finds the row is B's run now, and
stops without removing anyone. Everyone ends removed exactly once.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests.conftest import wait_until
from tests.helpers import alive, group_body, removal
from tests.invariants import assert_removal_invariants

pytestmark = pytest.mark.postgres

CLUSTER = {"JOBSUP_HEARTBEAT_S": "0.3", "JOBSUP_NODE_TIMEOUT_S": "2", "JOBSUP_POLL_S": "0.5"}
INACTIVE = 40
GROUP = "g-stale"


def test_a_stale_child_stops_at_its_next_batch(pg_url: str, make_server: Any) -> None:
    a = make_server(DATABASE_URL=pg_url, **CLUSTER)
    a.client.put(f"/admin/groups/{GROUP}", json=group_body(inactive=INACTIVE))
    job_id = a.start_job(removal(GROUP, batchSize=1, delayMs=400))
    child = a.wait_status(job_id, "running")["pid"]
    wait_until(lambda: (a.status(job_id)["result"] or {}).get("removedWhatsappIds"))
    b = make_server(DATABASE_URL=pg_url, **CLUSTER)
    b_id = str(b.client.get("/healthz").json()["instance"])

    os.kill(a.pid, signal.SIGSTOP)
    try:
        rescued = wait_until(
            lambda: (job := b.status(job_id))["owner"] == b_id and job["attempts"] == 2 and job,
            timeout=20,
        )
        assert rescued["status"] in ("pending", "running", "completed")
        # A's front is stalled, not dead: nothing tells its child to stop but
        # the fence its next batch checks. Unfenced, it would go on removing
        # for another ~15 s (a member every 400 ms).
        wait_until(lambda: not alive(child), timeout=5)
        assert_removal_invariants(pg_url, [GROUP])
    finally:
        os.kill(a.pid, signal.SIGCONT)

    # The rest quickly: B's run stops, and one batch removes what is left.
    assert b.client.post(f"/admin/jobs/{job_id}/cancel").json()["status"] == "cancelled"
    body = removal(GROUP, type="removal_queue", batchSize=INACTIVE)
    del body["inactivityWindowMs"]
    b.wait_status(b.start_job(body), "completed")
    counts = assert_removal_invariants(pg_url, [GROUP])
    assert (counts.removed, counts.success_rows, counts.queued) == (INACTIVE, INACTIVE, 0)
