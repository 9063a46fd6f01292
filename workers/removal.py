"""Moved to ``removal.jobs``: the old name imports the same module."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("removal.jobs")
