"""A pause in the middle of the first removal batch, for crash tests of real servers.

Loaded into a test server with ``JOBSUP_JOB_MODULES=tests.jobs,tests.pause_gateway``
and ``JOBSUP_TEST_PAUSE_DIR`` set. The first batch to reach it (across every
process of the test) has marked its members removed inside its open
transaction; it writes its pid to ``<dir>/in-batch`` and blocks reading the
FIFO ``<dir>/go``, so the test can kill something exactly there. Later batches
pass straight through.
"""

from __future__ import annotations

import os
from pathlib import Path

from workers.gateways.local import LocalGateway

_PAUSE_DIR = os.environ.get("JOBSUP_TEST_PAUSE_DIR")
_remove = LocalGateway.remove


def _pausing_remove(
    self: LocalGateway, group_wa_id: str, whatsapp_ids: list[str]
) -> dict[str, str | None]:
    answers = _remove(self, group_wa_id, whatsapp_ids)
    assert _PAUSE_DIR is not None
    try:
        fd = os.open(Path(_PAUSE_DIR, "in-batch"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return answers  # another batch took the pause already
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    with Path(_PAUSE_DIR, "go").open("rb") as go:  # blocks until the test opens it
        go.read()
    return answers


if _PAUSE_DIR is not None:
    LocalGateway.remove = _pausing_remove  # type: ignore[method-assign]
