"""Reading run directories back: tolerant, incremental, and usable as the monitor's data source.

A run may be finished, still being written by another process (``lrwatch view`` follows it), or cut
off by a crash mid-line. Only complete lines are read; a line that does not parse is skipped and
said so in :attr:`RunReader.skipped`, never raised.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrwatch.protocol.commands import Command
from lrwatch.protocol.events import LIVE_STATES, Event, RunState, RunStatus
from lrwatch.record.history import MetricHistory
from lrwatch.record.rundir import parse_event_line, parse_metrics_line, read_run_info, run_dir_problem
from lrwatch.schedule.spec import SpecError
from lrwatch.schedule.timeline import Timeline


class RunDirError(ValueError):
    """Not a run directory; the message is one line for the user."""


class _Tail:
    """Complete lines appended to a file since the last read; the unfinished rest waits."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.pending = b""
        self.line_no = 0
        self.inode: int | None = None
        self.replaced = False  # the file was replaced (metrics.csv widened): read again from its start

    def read(self) -> list[tuple[int, str]]:
        try:
            with self.path.open("rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                if self.inode is not None and inode != self.inode:
                    self.offset, self.pending, self.line_no, self.replaced = 0, b"", 0, True
                self.inode = inode
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.pending + data
        *lines, self.pending = data.split(b"\n")
        out = []
        for raw in lines:
            self.line_no += 1
            out.append((self.line_no, raw.decode("utf-8", errors="replace")))
        return out


class RunReader:
    """The metrics, events and timeline of a run directory, read incrementally with :meth:`poll`.

    ``alive`` says whether the process that writes the run is still there (``lrwatch.live.sockets.
    run_alive``); a run whose events never said how it ended while that process is gone is ``lost``.
    Without ``alive`` the state is what the events say.
    """

    def __init__(self, run_dir: str | Path, alive: Callable[[], bool] | None = None) -> None:
        self.path = Path(run_dir)
        self.alive = alive
        problem = run_dir_problem(self.path)
        if problem is not None:
            raise RunDirError(problem)
        if not (self.path / "metrics.csv").is_file() or not (self.path / "events.jsonl").is_file():
            raise RunDirError(f"{run_dir}: not an lrwatch run directory (no metrics.csv and events.jsonl)")
        self.info: dict[str, Any] = read_run_info(self.path)
        self._metrics = _Tail(self.path / "metrics.csv")
        self._events_tail = _Tail(self.path / "events.jsonl")
        self.columns: list[str] = []
        self.history: MetricHistory | None = None
        self._rows_read = 0  # data lines of metrics.csv read (parsed or skipped)
        self._skip = 0
        self.events: list[Event] = []
        self.timeline: Timeline | None = None
        self.skipped: list[str] = []
        self.replayed: RunState = "created"  # what the events say; until the start event is read
        self.drives_lr = True
        self.poll()
        if self.history is None:
            raise RunDirError(f"{run_dir}: metrics.csv has no header")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def status(self) -> RunState:
        """The run's state: what its events say, or ``lost`` when they never said how it ended and its
        process is gone (a ``kill -9``, a crash of the machine)."""
        unended = self.replayed in (*LIVE_STATES, "stopping")
        return "lost" if unended and self.alive is not None and not self.alive() else self.replayed

    @property
    def steps_done(self) -> int:
        """Steps logged so far (the run panel's step)."""
        last = self.history.last() if self.history is not None else None
        return int(last["step"]) + 1 if last else 0

    def state_text(self) -> str:
        """The state in words: ``lost (process gone at step 1,234)`` for a lost run, else the state."""
        return lost_text(self.steps_done) if self.status == "lost" else self.status

    def poll(self) -> bool:
        """Read what was appended since the last poll; ``True`` if anything new arrived."""
        new = False
        lines = self._metrics.read()
        if self._metrics.replaced:  # widened by a new metric: same rows, more columns; skip those read
            self._metrics.replaced = False
            self._skip = self._rows_read
            self.columns = []
        for line_no, line in lines:
            new |= self._metric_line(line_no, line)
        for line_no, line in self._events_tail.read():
            new |= self._event_line(line_no, line)
        return new

    def incomplete_tail(self) -> str | None:
        """What an unfinished last line means here, if there is one."""
        parts = []
        for tail in (self._metrics, self._events_tail):
            if tail.pending:
                parts.append(f"{tail.path.name}: an incomplete last line ({len(tail.pending)} bytes) is skipped")
        return "; ".join(parts) or None

    def _metric_line(self, line_no: int, line: str) -> bool:
        if not self.columns:
            self.columns = line.strip().split(",")
            if self.columns[:4] != ["step", "epoch", "lr", "loss"]:
                raise RunDirError(f"{self.path}/metrics.csv: header is not step,epoch,lr,loss,...")
            if self.history is None:
                self.history = MetricHistory(tuple(c for c in self.columns[4:] if c.startswith("val_")))
            return False
        if self._skip:
            self._skip -= 1
            return False
        self._rows_read += 1
        try:
            row = parse_metrics_line(self.columns, line)
            if len(row) == 4:
                self.history.append(*row, row.metrics)
            else:
                self.history.append_epoch(*row)
        except ValueError as exc:
            self.skipped.append(f"metrics.csv line {line_no}: {exc}")
            return False
        return True

    def _event_line(self, line_no: int, line: str) -> bool:
        try:
            event = parse_event_line(line)
        except ValueError as exc:
            self.skipped.append(f"events.jsonl line {line_no}: {exc}")
            return False
        self.events.append(event)
        try:
            self._replay(event)
        except (SpecError, KeyError, TypeError, ValueError) as exc:
            self.skipped.append(f"events.jsonl line {line_no}: {event.kind} could not be replayed ({exc})")
        return True

    def _replay(self, event: Event) -> None:
        """Rebuild the timeline as the run changed it: same calls, so the same LRs."""
        d = event.data
        if event.kind in ("start", "resumed"):
            self.timeline = Timeline.from_dict(d["timeline"])
            self.drives_lr = bool(d.get("drives_lr", self.drives_lr))
            self.replayed = "running"
        elif event.kind == "schedule":  # a script's own schedule, better known as it ran
            self.timeline = Timeline.from_dict(d["timeline"])
        elif event.kind == "switch" and self.timeline is not None and "scale" in d:
            self.timeline = self.timeline.scale(event.step, float(d["scale"]))
        elif event.kind == "switch" and self.timeline is not None and d.get("took_over"):
            self.timeline = self.timeline.take_over(event.step, d["spec"], float(d["base_lr"]))
            self.drives_lr = True  # lrwatch run: the script's scheduler had the LR until this switch
        elif event.kind == "switch" and self.timeline is not None:
            switched = self.timeline.switch(event.step, d["spec"], d.get("anchor"))
            if "base_lr" in d and switched.segments[-1].base_lr != float(d["base_lr"]):  # it was given (lr=)
                switched = self.timeline.take_over(event.step, d["spec"], float(d["base_lr"]))
            self.timeline = switched
        elif event.kind in ("edit", "plateau") and self.timeline is not None:  # a plateau's reduction is an edit
            self.timeline = self.timeline.edit(event.step, **d["params"])
            self.drives_lr = self.drives_lr or bool(d.get("took_over"))  # an edit of the script's mapped schedule
        elif event.kind == "length" and self.timeline is not None:
            self.timeline = self.timeline.with_length(int(d["total_steps"]))
        elif event.kind == "pause":
            self.replayed = "paused"
        elif event.kind == "resume":
            self.replayed = "running"
        elif event.kind == "finish":
            self.replayed = d.get("status", "finished")


class FileRunSource:
    """A :class:`~lrwatch.protocol.events.RunSource` over a run directory: read-only, following it as it grows."""

    def __init__(self, reader: RunReader) -> None:
        self.reader = reader

    @property
    def history(self) -> MetricHistory:
        assert self.reader.history is not None
        return self.reader.history

    @property
    def timeline(self) -> Timeline:
        if self.reader.timeline is None:  # an events file without a start: a flat line at the first LR
            last = self.history.last()
            return Timeline.start("exp:gamma=1", lr=(last or {}).get("lr", 1.0) or 1.0, steps_per_epoch=1)
        return self.reader.timeline

    def poll(self) -> bool:
        return self.reader.poll()

    def status(self) -> RunStatus:
        last = self.history.last() or {}
        step = int(last.get("step", -1)) + 1
        timeline = self.timeline
        k = timeline.steps_per_epoch
        return RunStatus(
            state=self.reader.status,
            step=step,
            epoch=step / k,
            total_steps=timeline.total_steps,
            steps_per_epoch=k,
            lr=last.get("lr", math.nan),
            run_dir=str(self.reader.path),
            drives_lr=self.reader.drives_lr,
            epochs_known=bool(self.reader.info.get("config", {}).get("epochs_known", True)),
            read_only=True,
            device=str(self.reader.info.get("config", {}).get("device", "")),
        )

    def events_since(self, index: int) -> list[Event]:
        return self.reader.events[index:]

    def submit(self, command: Command) -> None:
        """A view changes nothing."""


def lost_text(steps_done: int | None) -> str:
    """How a run whose process died is named everywhere (``attach``, ``view``, ``ls``)."""
    return f"lost (process gone at step {steps_done:,})" if steps_done is not None else "lost (process gone)"
