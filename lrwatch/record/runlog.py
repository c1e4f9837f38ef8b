"""What a run has recorded, in one place: the metric history (memory), the run directory (disk) and
the event list, appended to by the training thread and read by any other.

The engine decides *what* happened; :class:`RunLog` keeps it. Every event goes, in order, to the
list that monitors poll (:meth:`RunLog.events_since`), to ``events.jsonl`` and to the listeners (the
run's socket server, the headless lines).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from lrwatch.protocol.events import Event
from lrwatch.record.history import MetricHistory
from lrwatch.record.rundir import RunWriter

Listener = Callable[[Event], None]


class RunLog:
    """The run's history, run directory (``None``: memory only) and events."""

    def __init__(self, run_dir: Path | None, val_names: tuple[str, ...], *, resume_at: int | None = None) -> None:
        self.history = MetricHistory(val_names)
        self.writer = RunWriter(run_dir, val_names, resume_at=resume_at) if run_dir is not None else None
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Called in the training thread with every event; keep it cheap."""
        self._listeners.append(listener)

    def emit(self, event: Event) -> Event:
        with self._lock:
            self._events.append(event)
        if self.writer is not None:
            self.writer.add_event(event)
        for listener in self._listeners:
            listener(event)
        return event

    def events_since(self, index: int) -> list[Event]:
        with self._lock:
            return self._events[index:]

    def event_at(self, index: int) -> Event | None:
        with self._lock:
            return self._events[index] if index < len(self._events) else None

    def __len__(self) -> int:
        """Events so far."""
        return len(self._events)

    def add_step(
        self, step: int, epoch: float, lr: float, loss: float, metrics: dict[str, float] | None = None
    ) -> None:
        self.history.append(step, epoch, lr, loss, metrics)
        if self.writer is not None:
            self.writer.add_step(step, epoch, lr, loss, metrics)

    def add_epoch(self, step: int, epoch: float, values: dict[str, float]) -> None:
        self.history.append_epoch(step, epoch, values)
        if self.writer is not None:
            self.writer.add_epoch(step, epoch, values)

    def write_run_info(self, info: dict) -> None:
        if self.writer is not None:
            self.writer.write_run_info(info)

    def tick(self, now: float) -> None:
        """About once a second, from the training thread: ``metrics.csv`` flushed if a second has passed."""
        if self.writer is not None:
            self.writer.flush_due(now)

    def flush(self) -> None:
        """``metrics.csv`` to disk now (before a checkpoint, while paused)."""
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
