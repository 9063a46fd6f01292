"""The removal domain's front-process side: the /admin/groups API over the directory.

Loaded by the supervisor through the registry (``workers.removal`` names
``removal.api:routes``), never by name.
"""
