"""The fence a child checks before it acts on the world.

A job's run is identified by its fencing token ``(owner, attempt)``: the
instance that claimed it and the attempt number the claim stored. When an
instance stalls past the node timeout, another rescues its jobs and the row
changes (owner cleared or replaced, attempts moved on, or a final state);
the stalled instance's child may still be running. Each write that acts on
the world checks, inside its own transaction, that the row still names this
run, and holds a lock that makes a concurrent rescue wait until it commits.
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.db import Database

LIVE = ("pending", "running", "cancelling", "pausing", "paused")


class StaleRun(Exception):
    """This run no longer owns its job: it must not act, and it ends at once."""


@dataclass(frozen=True, slots=True)
class Fence:
    job_id: str
    owner: str
    attempt: int

    def check(self, db: Database) -> None:
        """Raise ``StaleRun`` if the row names another run; takes no lock."""
        self._verify(db, "")

    def hold(self, db: Database) -> None:
        """``check``, and keep the row from changing until the caller's transaction ends.

        PostgreSQL: ``FOR SHARE`` locks the job row, so a rescue's UPDATE
        waits for this transaction (and one already committed is seen).
        SQLite: the caller's ``BEGIN IMMEDIATE`` already holds the
        database's write lock, so nothing else can change the row.
        """
        self._verify(db, " FOR SHARE" if db.dialect == "postgresql" else "")

    def _verify(self, db: Database, lock: str) -> None:
        row = db.one(f"SELECT owner, attempts, status FROM jobs WHERE id = ?{lock}", (self.job_id,))
        if row is None:
            raise StaleRun(f"job {self.job_id} is gone; this run ({self._token()}) stops")
        owner, attempts, status = row
        if owner != self.owner or attempts != self.attempt or status not in LIVE:
            raise StaleRun(
                f"job {self.job_id} is no longer this run's ({self._token()}):"
                f" the row has owner {owner!r}, attempt {attempts}, status {status!r};"
                " this run stops without acting"
            )

    def _token(self) -> str:
        return f"owner {self.owner!r}, attempt {self.attempt}"
