"""The Textual monitor. Imported only by the CLI's interactive commands and tests."""

from __future__ import annotations

from lrwatch.app.monitor import LRWatchApp

__all__ = ["LRWatchApp"]
