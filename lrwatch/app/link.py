"""Where the monitor's run comes from, and whether it is there yet (no drawing here).

- A run trained in this process: ``train`` runs in a worker thread (``lrwatch-train``). Under a
  :class:`~lrwatch.live.host.Host` (``lrwatch run`` without a run process, the tests) the script's own
  ``lrwatch.watch()`` makes the engine, which becomes the source when it appears.
- A live run over its socket (``RemoteRunSource``): there once its first snapshot came; if the run ended
  before we connected, its run directory is followed instead (read-only).
- A run directory (``FileRunSource``): always there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from rich.text import Text

from lrwatch.live.host import Host, run_loop
from lrwatch.protocol.events import RunSource


class RunLink:
    """The app's run source and, for a run trained here, its worker thread."""

    def __init__(self, source: RunSource | None, train: Callable[..., None] | None, host: Host | None) -> None:
        self.source = source
        self.train = train
        self.host = host
        self.thread: threading.Thread | None = None
        self.notes: list[str] = []  # warnings for the user, taken by the app as it shows them

    def start(self) -> None:
        """Start training in a worker thread (a run trained in this process)."""
        if self.train is not None:
            self.thread = threading.Thread(target=self._run_training, name="lrwatch-train", daemon=True)
            self.thread.start()

    def _run_training(self) -> None:
        if self.host is not None:  # the loop calls lrwatch.watch(), which attaches its engine to the host
            try:
                run_loop(self.host, self.train)
            except BaseException:  # SystemExit or KeyboardInterrupt from the script: the run is already closed
                pass
            return
        run = getattr(self.source, "run", None)
        if run is not None:
            run(self.train)
        else:  # a source without a runner: the train function drives it itself
            self.train(self.source)  # type: ignore[misc]

    @property
    def training(self) -> bool:
        """The worker thread is still running."""
        return self.thread is not None and self.thread.is_alive()

    @property
    def failed(self) -> bool:
        """The run ended in an error, or the script failed before it called ``lrwatch.watch()``."""
        errored = self.source is not None and self.source.status().state == "error"
        return errored or (self.host is not None and self.host.error is not None)

    def connect(self) -> tuple[bool, bool, Text | None]:
        """``(ready, changed, message)``: the run can be drawn; the source changed since the last call
        (draw everything); else what we wait for, or why there is no run, as a line for the run panel."""
        changed = False
        if self.source is None and self.host is not None and self.host.engine is not None:
            self.source, changed = self.host.engine, True
            self.source.monitors += 1  # this app watches the engine itself (no socket counts it)
        ready = getattr(self.source, "ready", None)  # a run over its socket
        if ready is not None:
            source: Any = self.source
            self.notes.extend(source.notes)
            source.notes.clear()
            if source.connection == "live" or (ready.is_set() and source.failure is None):
                return True, changed, None
            if source.failure is not None and (ended := source.fallback()) is not None:
                self.source = ended  # it ended before we connected: its run directory, read-only
                return True, True, None
            if source.failure is None and source.status().state == "starting":
                return False, changed, Text("the run is starting: waiting for its first optimizer step …", style="dim")
            if source.failure is None:
                return False, changed, Text("starting the run, connecting to it …", style="dim")
            return False, changed, Text(f"✖ {source.failure}\n{source.detail()}", style="bold red")
        if self.source is not None:
            return True, changed, None
        if self.host is not None and self.host.error is not None:
            message = Text(f"✖ the script failed before lrwatch.watch():\n{self.host.error!r}", style="bold red")
        elif self.training or self.thread is None:
            message = Text("waiting for the script: its first optimizer.step() or lrwatch.watch() …", style="dim")
        else:
            message = Text("the script ended without an optimizer.step() or lrwatch.watch()", style="bold yellow")
        return False, changed, message
