"""The Textual monitor: one app over any run source (a run in this process, a live run over its socket,
a run directory read-only). Imported only by the CLI's interactive commands and tests.

- ``monitor``: the app and its frame timer; ``drawing``: what a frame draws; ``link``: where its run comes from;
- ``screen``: the main screen; ``panels``: what its run and schedule panels say; ``textfit``: text that fits a box;
- ``keys``: the schedule keys; ``runkeys``: the run keys and which keys a run offers; ``candidates``: the
  candidates shown; ``picker``: ``p``, every kind; ``help``: ``?``; ``screens``: the other modals;
- ``axis``: the x axis (epochs, steps, wall time); ``charts``: what the charts draw; ``widgets``, ``compare``.

Imports: everything below but ``cli`` (``live`` for a run's link, ``charts`` to draw).
"""

from __future__ import annotations

from lrwatch.app.monitor import LRWatchApp

__all__ = ["LRWatchApp"]
