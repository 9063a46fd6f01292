"""Moved to ``removal.directory``: this name, and its modules' names, import the same modules.

The modules are registered under their old names here, so that
``workers.directory.queue`` is ``removal.directory.queue`` itself, never a
second copy (the files beside this one only say so for tools that look).
"""

import importlib
import sys

_NEW = "removal.directory"
for _module in ("history", "journal", "members", "queue", "schema", "shapes"):
    sys.modules[f"{__name__}.{_module}"] = importlib.import_module(f"{_NEW}.{_module}")
sys.modules[__name__] = importlib.import_module(_NEW)
