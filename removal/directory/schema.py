"""The directory's tables, applied by ``supervisor.store.migrations`` as "directory"."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE wa_groups (
            group_wa_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        );
        CREATE TABLE wa_members (
            group_wa_id TEXT NOT NULL REFERENCES wa_groups (group_wa_id),
            whatsapp_id TEXT NOT NULL,
            is_admin BOOLEAN NOT NULL,
            joined_at BIGINT NOT NULL,
            last_active_at BIGINT,
            removed_at BIGINT,
            PRIMARY KEY (group_wa_id, whatsapp_id)
        );
        CREATE TABLE wa_whitelist (
            group_wa_id TEXT NOT NULL REFERENCES wa_groups (group_wa_id),
            whatsapp_id TEXT NOT NULL,
            PRIMARY KEY (group_wa_id, whatsapp_id)
        );
        CREATE TABLE removal_queue (
            group_wa_id TEXT NOT NULL REFERENCES wa_groups (group_wa_id),
            whatsapp_id TEXT NOT NULL,
            queued_at BIGINT NOT NULL,
            window_ms BIGINT NOT NULL,
            job_id TEXT,
            PRIMARY KEY (group_wa_id, whatsapp_id)
        );
        CREATE INDEX removal_queue_order ON removal_queue (group_wa_id, queued_at);
        CREATE TABLE removal_history (
            id {autoid},
            group_wa_id TEXT NOT NULL,
            whatsapp_id TEXT NOT NULL,
            outcome TEXT NOT NULL CHECK (outcome IN ('SUCCESS', 'FAILURE')),
            reason TEXT,
            job_id TEXT,
            at BIGINT NOT NULL
        );
        CREATE INDEX removal_history_group ON removal_history (group_wa_id, at);
        CREATE INDEX removal_history_job ON removal_history (job_id)
        """,
    ),
    (
        2,
        # The journal of a remote gateway's removals: one PENDING intent per
        # member whose removal a run is about to ask for, settled (deleted,
        # with its outcome row in removal_history) in one transaction.
        """
        CREATE TABLE removal_intents (
            group_wa_id TEXT NOT NULL REFERENCES wa_groups (group_wa_id),
            whatsapp_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            reason TEXT NOT NULL,
            at BIGINT NOT NULL,
            PRIMARY KEY (group_wa_id, whatsapp_id)
        )
        """,
    ),
    (
        3,
        # Which run of its job wrote each row: a job resumed across a deploy
        # shows one history, each row with its attempt.
        "ALTER TABLE removal_history ADD COLUMN attempt INTEGER",
    ),
    (
        4,
        # A member may be known by two ids: a phone id (...@s.whatsapp.net)
        # and a LID (...@lid). whatsapp_id stays the member's key (the id it
        # was first seen by); alt_id holds the other one once known. Lookups
        # match either (members.resolve_ids, WHITELISTED_SQL). The history
        # keeps both, as they were when the row was written.
        """
        ALTER TABLE wa_members ADD COLUMN alt_id TEXT;
        CREATE INDEX wa_members_alt ON wa_members (group_wa_id, alt_id);
        ALTER TABLE removal_history ADD COLUMN alt_id TEXT
        """,
    ),
    (
        5,
        # The time of the latest membership fact applied to a member (a sync,
        # a webhook's add/remove/promote/demote, an import, a removal): a
        # fact older than it is late and changes no membership, so a retried
        # or reordered delivery never undoes a newer change.
        """
        ALTER TABLE wa_members ADD COLUMN membership_at BIGINT
        """,
    ),
]
