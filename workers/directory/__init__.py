"""Moved to ``removal.directory``; this name still imports it, and its modules too."""

from removal.directory import *  # noqa: F403
from removal.directory import __all__ as __all__
