"""Clients of a run's socket: :class:`RunClient` (one request at a time: ``send``, ``ls``) and
:class:`RemoteRunSource` (the monitor's mirror of a live run: history, timeline, events, status).

A :class:`RemoteRunSource` reads in its own thread: a ``snapshot`` (every row so far, exact), then
``rows``/``epochs``/``event``/``timeline``/``status`` as the run goes, each row placed by its index,
so nothing is missed or counted twice. When the connection ends it keeps what it has: the run
finished (``state`` from its last status), or it was lost (``lost``: the process is gone).
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lrwatch.live.sockets import LiveRecord, connect, record_of_run_dir
from lrwatch.protocol.commands import Command
from lrwatch.protocol.events import ENDED_STATES, Event, RunStatus
from lrwatch.protocol.wire import (
    MAX_SERVER_LINE,
    VERSION,
    LineBuffer,
    WireError,
    decode,
    encode,
    to_float,
    unpack_metrics,
    unpack_rows,
)
from lrwatch.record.history import MetricHistory
from lrwatch.schedule.timeline import Timeline


class RunGone(ConnectionError):
    """No live run answers there; the message is one line for the user."""


class RunClient:
    """A blocking connection to one run: hello, then requests and their replies."""

    def __init__(
        self, path: str, *, kind: str = "client", owner: bool = False, timeout: float = 5.0, alive: bool = False
    ) -> None:
        """``alive``: the run's process is known to live, so a missing listener is waited for a moment."""
        self.path = path
        self._lines = LineBuffer(MAX_SERVER_LINE)
        self._ready: list[bytes] = []
        self._write_lock = threading.Lock()
        try:
            self.sock = connect(path, timeout, patience=min(timeout, 3.0), alive=alive)  # a busy run: retried
        except OSError as exc:
            raise RunGone(f"no live run answers at {path} ({exc})") from None
        try:
            self.send({"type": "hello", "version": VERSION, "client": kind, "owner": owner})
            self.hello = self.read()
        except (OSError, WireError) as exc:
            self.sock.close()
            raise RunGone(f"no live run answers at {path} ({exc})") from None
        if self.hello.get("type") != "hello":
            self.sock.close()
            raise RunGone(f"{path}: the run refused us: {self.hello.get('message', self.hello)}")

    def send(self, message: dict[str, Any]) -> None:
        with self._write_lock:
            self.sock.sendall(encode(message))

    def read(self) -> dict[str, Any]:
        """The next message; ``ConnectionError`` when the run closed the connection."""
        while not self._ready:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the run closed the connection")
            self._ready.extend(self._lines.feed(data))
        return decode(self._ready.pop(0))

    def status(self) -> RunStatus:
        self.send({"type": "status"})
        return RunStatus.from_dict(self._reply("status")["status"])

    def command(self, command: Command, timeout: float = 60.0) -> dict[str, Any]:
        """Send ``command`` and wait for the run's answer: a ``result`` (with its event) or an ``error``."""
        self.send({"type": "command", "id": 1, "command": command.to_dict()})
        self.sock.settimeout(timeout)
        return self._reply("result", "error")

    def _reply(self, *types: str) -> dict[str, Any]:
        while True:
            message = self.read()
            if message["type"] in types:
                return message
            if message["type"] == "error":
                raise RunGone(f"the run refused the request: {message.get('message')}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def socket_of(run_dir: str | Path) -> LiveRecord:
    """The live record of ``run_dir``; :class:`RunGone` if it has none."""
    record = record_of_run_dir(run_dir)
    if record is None:
        raise RunGone(f"{run_dir}: the run is not live (it has ended; lrwatch view {run_dir} shows it)")
    return record


class RemoteRunSource:
    """A :class:`~lrwatch.protocol.events.RunSource` over a run's socket, kept up to date by a reader thread.

    ``find`` returns the socket path to connect to, or ``None`` while the run is not serving yet;
    ``alive`` says whether waiting still makes sense (the spawned run process is still there).
    ``provisional``: the timeline the run was asked to start from (the demo's, computed without torch),
    drawn until the run's own arrives; ``cancel`` ends a run started for this monitor that has not
    answered yet (``q`` before its first frame).
    """

    def __init__(
        self,
        find: Callable[[], str | None],
        *,
        owner: bool = False,
        alive: Callable[[], bool] = lambda: True,
        connect_timeout: float = 120.0,
        provisional: Timeline | None = None,
        cancel: Callable[[], None] | None = None,
    ) -> None:
        self.find = find
        self.provisional = provisional
        self._cancel = cancel
        self.cancelled = False
        self.owner = owner
        self.alive = alive
        self.connect_timeout = connect_timeout
        self.client: RunClient | None = None
        self.history = MetricHistory(())
        self._rows_through = 0  # the run's rows the history stands for (a decimated snapshot holds fewer)
        self._metrics_through: dict[str, int] = {}
        self._timeline: Timeline | None = None
        self._rows_total = 0
        self._events: list[Event] = []
        self._lock = threading.Lock()
        self._status = RunStatus("created", 0, 0.0, None, 1, float("nan"))
        self.connection = "connecting"  # → live → closed
        self.failure: str | None = None  # why it never connected
        self.notes: list[str] = []  # the run's one-line answers to bad requests, for the monitor to show
        self.detail: Callable[[], str] = lambda: ""  # more about a failure (the run's log tail)
        self.fallback: Callable[[], Any] = lambda: None  # a read-only source when the run ended unseen
        self.on_ready: Callable[[], None] = lambda: None  # told (in the reader thread) once the snapshot is in
        self.ready = threading.Event()
        self.closed = threading.Event()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name="lrwatch-client", daemon=True)

    @classmethod
    def of_path(cls, path: str, **kwargs: Any) -> RemoteRunSource:
        return cls(lambda: path, **kwargs)

    def start(self) -> RemoteRunSource:
        self._thread.start()
        return self

    # -- RunSource --------------------------------------------------------------------------
    @property
    def timeline(self) -> Timeline:
        timeline = self._timeline or self.provisional
        assert timeline is not None, "not connected yet"
        return timeline

    @property
    def drawable(self) -> bool:
        """There is something to draw: the run's own timeline, or the one it was asked to start from."""
        return self._timeline is not None or (self.provisional is not None and self.failure is None)

    def status(self) -> RunStatus:
        with self._lock:
            status = self._status
        if self._timeline is None and self.provisional is not None and self.connection == "connecting":
            plan = self.provisional  # not answered yet: where the run will start
            status = replace(status, state="starting", total_steps=plan.total_steps,
                             steps_per_epoch=plan.steps_per_epoch, lr=plan.lr_at(0))  # fmt: skip
        if self.connection == "closed":  # what it had; a run that ended without saying so was lost
            state = status.state if status.state in ENDED_STATES else "lost"
            status = replace(status, state=state, read_only=True)
        return status

    def events_since(self, index: int) -> list[Event]:
        with self._lock:
            return self._events[index:]

    def submit(self, command: Command) -> None:
        if self.client is None or self.connection != "live":
            self.notes.append("the run is not connected: nothing was sent")
            return
        try:
            self.client.send({"type": "command", "id": next(self._ids), "command": command.to_dict()})
        except OSError:
            self.notes.append("the run is gone: nothing was sent")

    def cancel(self) -> bool:
        """Stop waiting for the run and end it, if it has not answered yet and this monitor started it
        (``q``, Ctrl+C, SIGTERM before the first frame of the run): ``True`` if it was cancelled so."""
        if self.connection == "live" or self._cancel is None:
            return False
        self.cancelled = True
        self.failure = self.failure or "cancelled before the run answered"
        self._cancel()
        return True

    def detach(self) -> None:
        """Leave on purpose: the run goes on (for ``--on-hangup stop``, this is not a hangup)."""
        if self.client is not None:
            with contextlib.suppress(OSError):
                self.client.send({"type": "detach"})
            self.client.close()

    # -- the reader thread ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.client = self._connect()
            if self.client is None:
                return
            self.client.sock.settimeout(None)
            self.client.send({"type": "subscribe"})
            while True:
                self._handle(self.client.read())
        except (OSError, WireError, ValueError, KeyError, TypeError) as exc:
            if self.connection == "connecting":
                self.failure = self.failure or f"could not connect: {exc}"
        finally:
            self.connection = "closed"
            self.ready.set()
            self.closed.set()

    def _connect(self) -> RunClient | None:
        deadline = time.monotonic() + self.connect_timeout
        while True:
            path = self.find()
            if path is not None:
                try:
                    return RunClient(path, kind="monitor", owner=self.owner)
                except RunGone as exc:
                    last = str(exc)
                else:
                    last = ""
            else:
                last = "the run is not serving yet"
            if self.cancelled:
                return None
            if not self.alive():
                self.failure = "the run process ended before it served its socket"
                return None
            if time.monotonic() > deadline:
                self.failure = f"gave up waiting for the run: {last}"
                return None
            time.sleep(0.1)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "snapshot":
            self.history = MetricHistory(tuple(message["val_names"]))
            self._rows_through = 0
            self._metrics_through = {}
            self._rows(message["rows"])
            self._rows_through = int(message.get("rows_through", self._rows_through))  # a decimated snapshot's
            self._metrics({"series": message.get("metrics", {})})
            self._epochs(message["epochs"])
            with self._lock:
                self._timeline = Timeline.from_dict(message["timeline"])
                self._events = [Event.from_dict(e) for e in message["events"]]
                self._status = RunStatus.from_dict(message["status"])
            self._rows_total = int(message.get("rows_total", 0))  # the rest of its rows follow in slices
            self._catch_up()
        elif kind == "snapshot_rows":  # the snapshot's rows, in slices: placed as they come (decimated ones too)
            _, steps, epochs, lrs, losses = unpack_rows(message)
            self.history.extend(steps, epochs, lrs, losses)
            self._catch_up()
        elif kind == "rows":
            self._rows(message)
            self._catch_up()
        elif kind == "metrics":
            self._metrics(message)
        elif kind == "epochs":
            self._epochs(message)
        elif kind == "event":
            with self._lock:
                if int(message["index"]) == len(self._events):
                    self._events.append(Event.from_dict(message["event"]))
        elif kind == "timeline":
            with self._lock:
                self._timeline = Timeline.from_dict(message["timeline"])
        elif kind == "status":
            with self._lock:
                self._status = RunStatus.from_dict(message["status"])
        elif kind == "error":
            self.notes.append(str(message.get("message", "the run refused a request")))

    def _catch_up(self) -> None:
        """Ready (live) once the rows the run had at the snapshot have all arrived."""
        if self.connection == "connecting" and len(self.history) >= self._rows_total and self._timeline is not None:
            self.connection = "live"
            self.ready.set()
            self.on_ready()

    def _rows(self, message: dict[str, Any]) -> None:
        start, steps, epochs, lrs, losses = unpack_rows(message)
        have = self._rows_through
        if start > have:
            raise WireError(f"rows from {start}, but only {have} arrived before: a gap")
        skip = have - start  # rows already here (never expected; kept exact if it happens)
        if skip < len(steps):
            self.history.extend(steps[skip:], epochs[skip:], lrs[skip:], losses[skip:])
            self._rows_through = start + len(steps)

    def _metrics(self, message: dict[str, Any]) -> None:
        throughs = {name: entry.get("through") for name, entry in message.get("series", {}).items()}
        for name, (start, steps, values) in unpack_metrics(message).items():
            have = self._metrics_through.get(name, 0)
            if start > have:
                raise WireError(f"{name} from point {start}, but only {have} arrived before: a gap")
            skip = have - start
            if skip < len(steps):
                self.history.extend_metric(name, steps[skip:], values[skip:])
            through = throughs.get(name)  # a decimated snapshot's metric stands for more points than it holds
            self._metrics_through[name] = int(through) if through is not None else max(have, start + len(steps))

    def _epochs(self, message: dict[str, Any]) -> None:
        values = message["values"]
        for i, (step, epoch) in enumerate(zip(message["step"], message["epoch"], strict=True)):
            metrics = {name: to_float(column[i]) for name, column in values.items()}
            self.history.append_epoch(int(step), to_float(epoch), metrics)
