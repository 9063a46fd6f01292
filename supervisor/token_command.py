"""``jobsup token reset``: replace the generated admin token and print the new one.

The generated token is the one a server accepts while ``JOBSUP_TOKENS`` is
unset (``supervisor.keys``). Only its hash is stored, so a lost token cannot
be shown again: this makes a new one. Running servers keep accepting the
old one until they restart.
"""

from __future__ import annotations

import argparse
from typing import Any

from supervisor.startup import EXIT_USAGE, StartupFailed


def reset(args: argparse.Namespace) -> int:
    from supervisor.keys import reset_admin_token
    from supervisor.startup import load_job_modules, load_settings, migrate_database
    from workers.db import connect

    settings = load_settings(args)
    if settings.tokens:
        raise StartupFailed(
            EXIT_USAGE,
            "token reset: JOBSUP_TOKENS is set, so no generated token is in use; "
            "change JOBSUP_TOKENS instead",
        )
    load_job_modules(settings)
    migrate_database(settings)
    db = connect(settings.database_url)
    try:
        token = reset_admin_token(db)
    finally:
        db.close()
    print("new admin token (servers accept it, and no longer the old one, once restarted):")
    print(token)
    return 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "token",
        help="make a new generated admin token (while JOBSUP_TOKENS is unset)",
        description=__doc__,
    )
    parser.add_argument("action", choices=["reset"], help="reset: store a new token, print it")
    parser.set_defaults(run=reset)
