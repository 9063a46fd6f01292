"""Moved to ``removal.gateways``: this name, and ``.local``, import the same modules.

``workers.gateways.local`` is registered here as ``removal.gateways.local``
itself (the file beside this one only says so for tools that look).
"""

import importlib
import sys

_NEW = "removal.gateways"
sys.modules[f"{__name__}.local"] = importlib.import_module(f"{_NEW}.local")
sys.modules[__name__] = importlib.import_module(_NEW)
