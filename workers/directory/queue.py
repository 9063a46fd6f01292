"""Moved to ``removal.directory.queue``: the old name imports the same module."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("removal.directory.queue")
