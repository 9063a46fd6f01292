"""The jobsup front process: HTTP API, job table, scheduling, child lifecycle, storage."""
