"""The Textual monitor: one app over any run source (a run in this process, a live run over its socket,
a run directory read-only). Imported only by the CLI's interactive commands and tests.

- ``monitor``: the app; ``link``: where its run comes from; ``screen``: the main screen;
- ``keys``: the schedule keys; ``screens``: the modals; ``widgets``, ``charts``, ``compare``.

Imports: everything below but ``cli`` (``live`` for a run's link, ``charts`` to draw).
"""

from __future__ import annotations

from lrwatch.app.monitor import LRWatchApp

__all__ = ["LRWatchApp"]
