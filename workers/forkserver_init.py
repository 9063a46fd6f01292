"""Imported by the forkserver only (as a preload module), never by jobs.

The forkserver is the parent of every job child. It must survive a SIGTERM
sent to the whole process group (Procfile platforms do that): if it died,
multiprocessing would report every running child as exited with 255.
Children restore their own SIGTERM handling in ``workers.entry``.
"""

import signal

signal.signal(signal.SIGTERM, signal.SIG_IGN)
