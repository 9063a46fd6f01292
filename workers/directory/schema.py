"""Moved to ``removal.directory.schema``: the old name imports the same module."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("removal.directory.schema")
