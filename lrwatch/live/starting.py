"""A run from its first moment: served before its engine exists.

``lrwatch run`` knows the script's optimizer only at its first ``optimizer.step()`` (nanoGPT evaluates for
seconds before it), ``lrwatch demo`` builds its data first; the engine is made there, by ``lrwatch.watch()``.
Until then the run's socket is served with a :class:`StartingRun` in the engine's place
(:func:`serve_starting`): ``lrwatch ls`` lists the run as ``starting``, ``send`` and ``attach`` reach it.
Commands wait, in order, and go to the engine when it comes (:meth:`StartingRun.hand_to`), so the first
step's boundary applies them: a switch there continues from the LR the optimizer holds then (what the
script set), a pause holds the first step. A stop does not wait: nothing has been trained, so the script
is interrupted at once, as Ctrl+C would (``interrupt``). A monitor that subscribes gets the run's
snapshot once the engine is there (:meth:`lrwatch.live.server.RunServer.adopt`).

The run directory holds ``live.json`` (and ``lrwatch.log``) from then on; ``run.json``, ``metrics.csv``
and ``events.jsonl`` come with the engine. :func:`starting_record` tells such a directory from one that
is not a run's, and :func:`wait_until_started` waits for it (``lrwatch view``, ``attach``, ``serve``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrwatch.live.server import RunServer
from lrwatch.live.sockets import LiveRecord, is_stale, new_record, pid_alive, record_of_run_dir
from lrwatch.protocol.commands import Command, Stop
from lrwatch.protocol.events import Event, RunStatus

STARTING = "starting"
STARTING_NOTE = "starting: the script has not taken its first optimizer step yet"


class StartingRun:
    """The engine's stand-in in the run's server until the script's first optimizer step."""

    starting = True

    def __init__(self, run_dir: Path, *, interrupt: Callable[[str], None] | None = None) -> None:
        self.run_dir = run_dir
        self.interrupt = interrupt  # ends the script before its first step (a stop sent now)
        self.state = STARTING
        self.monitors = 0
        self.awaits_divergence_answer = False
        self.stopped: str | None = None  # the reason, once a stop came before the first step
        self._pending: list[tuple[Command, Any]] = []
        self._engine: Any = None
        self._lock = threading.Lock()

    def status(self) -> RunStatus:
        return RunStatus(STARTING, 0, 0.0, None, 1, math.nan, run_dir=str(self.run_dir), drives_lr=False,
                         epochs_known=False)  # fmt: skip

    def submit(self, command: Command, on_done: Callable[[Event], None] | None = None) -> None:
        """Queue ``command`` for the first step's boundary; a stop ends the script now."""
        with self._lock:
            if self._engine is not None:
                self._engine.submit(command, on_done)  # the server read us just before the hand-over
                return
            if not isinstance(command, Stop) or self.interrupt is None:
                self._pending.append((command, on_done))
                return
            self.stopped = command.reason
        event = Event("stop", 0, 0.0, time.time(), {"reason": command.reason, "before_first_step": True})
        if on_done is not None:
            on_done(event)
        self.interrupt(command.reason)

    def hand_to(self, engine: Any) -> None:
        """The engine exists: the commands that waited go to it, in order, and from now on everything does."""
        with self._lock:
            self._engine = engine
            for command, on_done in self._pending:
                engine.submit(command, on_done)
            self._pending.clear()


def serve_starting(run_dir: Path, *, on_owner_lost: str, interrupt: Callable[[str], None] | None) -> RunServer | None:
    """Serve the run's socket now, a :class:`StartingRun` in the engine's place; ``None`` if it cannot be
    served (the engine tries again, and says why)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        server = RunServer(StartingRun(run_dir, interrupt=interrupt), new_record(run_dir), on_owner_lost=on_owner_lost)
        server.start()
    except OSError:
        return None
    return server


def starting_record(run_dir: str | Path) -> LiveRecord | None:
    """The live record of a run directory whose run is alive but has not written ``run.json`` yet."""
    path = Path(run_dir)
    if (path / "run.json").is_file():
        return None
    record = record_of_run_dir(path)
    if record is None or is_stale(record):
        return None
    return record


def wait_until_started(run_dir: str | Path, say: Callable[[str], None], poll: float = 0.1) -> bool:
    """If ``run_dir``'s run is still starting, say so once and wait until it has written ``run.json``;
    ``False`` if its process ended first (it never took a step)."""
    record = starting_record(run_dir)
    if record is None:
        return True
    say(f"{run_dir}: {STARTING} (pid {record.pid}, before the script's first optimizer step); waiting for it")
    while not (Path(run_dir) / "run.json").is_file():
        if not pid_alive(record.pid):
            return (Path(run_dir) / "run.json").is_file()
        time.sleep(poll)
    return True
