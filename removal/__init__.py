"""The removal domain: removing inactive members from WhatsApp groups, in rate-limited batches.

A job-type package like any other, beside the generic child runtime
(``workers``), never inside it:

- ``removal.jobs``: the job types (``removal_workflow``, ``removal_queue``)
  and what the domain contributes to the supervisor through the registry;
- ``removal.steps``: the removal's fenced writes (sync, one batch);
- ``removal.directory``: groups, members, whitelist, queue, history, journal;
- ``removal.gateways``: how a job reaches a group;
- ``removal.api`` and ``removal.groups``: the /admin/groups routes and their
  service, imported in the front process only (the registry names them).
"""
