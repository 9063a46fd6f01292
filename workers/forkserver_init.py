"""Imported by the forkserver only (as a preload module), never by jobs.

The forkserver is the parent of every job child. It must survive a SIGTERM
sent to the whole process group or session (Procfile platforms do that): if
it died, multiprocessing would report every running child as exited with
255. So it does not die of SIGTERM; it passes it on to the front process,
its parent, which then stops the server gracefully (and at once starts no
new job). A SIGTERM to any process of the server's own machinery is a
request to stop the server. Children replace this handler in
``workers.entry``; until they do, their parent is the forkserver, not the
front, and nothing is passed on.
"""

import os
import signal
import warnings
from types import FrameType

from workers.limits import make_subreaper

_FRONT = os.getppid()


def _pass_on(signum: int, frame: FrameType | None) -> None:
    # Only while the front is still our parent: once it is gone, the
    # forkserver belongs to init (or a subreaper) and exits on its own.
    if os.getppid() == _FRONT:
        os.kill(_FRONT, signal.SIGTERM)


signal.signal(signal.SIGTERM, _pass_on)


# A job's child that dies on its own (a crash, a SIGKILL from outside) leaves
# its descendants to the closest subreaper: us rather than init, so the front
# still finds them below us and kills them (``JobProcess.sweep_orphans``).
# Our loop reaps them when they die, as it reaps its own children, and warns
# of each one it did not fork: expected here, so not worth a line each.
make_subreaper()
warnings.filterwarnings("ignore", message="forkserver: waitpid returned unexpected pid")
