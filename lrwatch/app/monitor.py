"""The live monitor: LR and loss charts, status, schedule, events; schedule switching by key.

Data flows one way. The training thread appends to the history and logs events; this app polls
them on a timer (``--fps``) and redraws a chart only when its data, size or options changed.
It talks to the run only through :class:`~lrwatch.protocol.events.RunSource`: reads, and commands.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive

from lrwatch.app.axis import StepClock
from lrwatch.app.candidates import Candidates
from lrwatch.app.charts import (
    LossView,
    PreviewCache,
    RaceCurves,
    StepRate,
    race_curves,
)
from lrwatch.app.drawing import CHART_MIN_INTERVAL, Drawing
from lrwatch.app.early import EarlyKeys
from lrwatch.app.keys import ScheduleKeys
from lrwatch.app.link import RunLink
from lrwatch.app.metrics import MetricsScreen
from lrwatch.app.runkeys import RunKeys
from lrwatch.app.screen import MonitorScreen
from lrwatch.app.screens import DivergenceScreen, ErrorScreen
from lrwatch.app.widgets import ViewScreen
from lrwatch.live.host import Host
from lrwatch.protocol.events import Event, RunSource
from lrwatch.record.history import Ema

STATUS_INTERVAL = 1.0
TIMER_SLACK = 0.05  # frames land a few ms early or late: "a second since" must not mean every other frame


class RunEvent(Message):
    """An event of the run (a switch, a pause, an error, ...), as a message to the app."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class RunReady(Message):
    """A remote run's first snapshot arrived: draw now rather than at the next frame."""


class LRWatchApp(EarlyKeys, Drawing, RunKeys, ScheduleKeys, App):
    CSS_PATH = "lrwatch.tcss"
    TITLE = "lrwatch"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        Binding("e", "switch('exp')", "exp"),
        Binding("c", "switch('cosine')", "cos"),
        Binding("r", "switch('cosine-restarts')", "sgdr"),
        Binding("s", "switch('step')", "step"),
        Binding("p", "pick", "kinds"),
        Binding("E", "candidate('exp')", "preview exp", show=False),
        Binding("C", "candidate('cosine')", "preview cosine", show=False),
        Binding("R", "candidate('cosine-restarts')", "preview restarts", show=False),
        Binding("S", "candidate('step')", "preview step", show=False),
        Binding("D", "candidate('cooldown')", "preview cooldown", show=False),
        Binding("v", "candidate_all", "compare", show=False),
        *(Binding(str(slot + 1), f"mark({slot})", f"mark candidate {slot + 1}", show=False) for slot in range(4)),
        Binding("enter", "apply_candidate", "apply", show=False),
        Binding("escape", "clear_candidates", "clear", show=False),
        Binding("colon,slash", "edit_spec", "edit", key_display=":"),
        Binding("plus,equals_sign", "nudge(True)", "+", show=False),
        Binding("minus", "nudge(False)", "-", show=False),
        Binding("a", "toggle_anchor", "anchor", show=False),
        Binding("k", "checkpoint", "checkpoint", show=False),
        Binding("F", "find_lr", "LR range test", show=False),
        Binding("f", "race", "race", show=False),
        Binding("space", "pause", "pause"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("m", "metrics", "metrics", show=False),
        Binding("d", "detach", "detach"),
        Binding("q", "quit_run", "quit"),
        Binding("ctrl+c,ctrl+q", "quit_run", "quit", show=False, priority=True),
    ]

    anchor: reactive[str] = reactive("continue", init=False)  # the next switch's: continue ↔ restart from base

    def __init__(
        self,
        source: RunSource | None,
        train: Callable[..., None] | None = None,
        *,
        host: Host | None = None,
        device: str = "",
        fps: float = 2.0,
        ascii_markers: bool = False,
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.thread_time,
        wall_clock: Callable[[], float] = time.time,
        notes: list[str] | None = None,
        owner: bool = True,
        race_steps: int | None = None,
    ) -> None:
        """``owner``: this monitor started the run (``q`` stops it at once); an attached one asks first.
        ``race_steps``: the horizon of the races ``f`` starts (None: the run's default)."""
        super().__init__()
        self._monitor_screen = MonitorScreen()
        self.owner = owner
        self.race_steps = race_steps
        self.detached = False  # d: the run goes on without us
        self.hung_up = False  # the terminal hung up: the same, unless the run was started with --on-hangup stop
        self.notes = list(notes or [])
        self.link = RunLink(source, train, host)
        self.device = device
        self.fps = fps
        self.ascii_markers = ascii_markers
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.wall_clock = wall_clock
        self.step_clock = StepClock()  # wall time of the steps: the x axis in time (x)
        self.chart_interval = CHART_MIN_INTERVAL
        self.candidates = Candidates()
        self.races: list[RaceCurves] = []  # the races seen: their candidates' curves stay drawn
        self._racing: list[str] = []  # the candidates of a race under way
        self.races_ended: set[int] = set()
        self._preview = PreviewCache()
        self._loss_view = LossView(Ema(self._monitor_screen.smoothing))
        self._events_seen = 0
        self._drawn: dict[str, Any] = {}
        self._status_shown: dict[str, Any] = {"at": -1e9}
        self._dirty = True
        self.rate = StepRate()
        self._quitting = False
        self._leaving = False  # exit() was called: late run events and frames are dropped (the screen goes)
        self._redraw_pending = False
        self.connected = False  # the run can be read (a remote one: its first snapshot came)
        self.second_metric: str | None = None  # the main view's second chart: this metric instead of the loss

    # -- one app, three run sources ---------------------------------------------------------
    @classmethod
    def attached(cls, source: RunSource, *, owner: bool, **view: Any) -> LRWatchApp:
        """A live run over its socket (``RemoteRunSource``): the monitor ``lrwatch demo`` shows for the run
        it started (``owner``: ``q`` stops it at once) and ``lrwatch attach`` (``q`` asks first)."""
        return cls(source, None, owner=owner, **view)

    @classmethod
    def read_only(cls, source: RunSource, **view: Any) -> LRWatchApp:
        """A run directory (``FileRunSource``), followed as it grows: ``lrwatch view``, an ended run's attach."""
        return cls(source, None, owner=False, **view)

    @classmethod
    def in_process(cls, train: Callable[..., None], *, host: Host | None = None, **view: Any) -> LRWatchApp:
        """A run trained by ``train`` in a worker thread of this process (tests, the bench): the run lives
        and dies with the app, so ``d`` is refused."""
        return cls(None, train, host=host, **view)

    @property
    def source(self) -> RunSource | None:
        """The run this monitor shows (None until a script's ``lrwatch.watch()`` made it)."""
        return self.link.source

    @property
    def epochs_known(self) -> bool:
        return self.source is None or self.source.status().epochs_known

    # -- the screen -------------------------------------------------------------------------
    @property
    def monitor_screen(self) -> MonitorScreen:
        """The main screen, whatever modal is on top (timers and actions address its widgets)."""
        return self._monitor_screen

    async def on_mount(self) -> None:
        await self.push_screen(self._monitor_screen)
        if hasattr(self.source, "on_ready"):  # post_message is thread-safe: the reader thread says so
            self.source.on_ready = lambda: self.post_message(RunReady())
        self._titles()
        for note in self.notes:
            self.notify(note, severity="warning", timeout=8)
        self.link.start()
        self.frame_timer = self.set_interval(1 / self.fps, self.tick)
        # Full collections with torch loaded take ~100 ms and land in a frame: once the app and the
        # loop are warm, move what exists out of the collector's sight (gc.freeze).
        self.set_timer(3.0, gc.freeze)
        self.call_after_refresh(self.tick)

    def _connect(self) -> bool:
        """The run can be drawn; else the run panel says what we wait for (:class:`RunLink`)."""
        ready, changed, message = self.link.connect()
        self.connected = ready
        self._dirty = self._dirty or changed
        while self.link.notes:
            self.notify(self.link.notes.pop(0), severity="warning", timeout=6)
        if message is not None:
            waiting = self.waiting_text()
            self.monitor_screen.show_message(Text.assemble(message, "\n", waiting) if waiting else message)
        return ready

    def waiting_changed(self) -> None:
        """A key was held back (:class:`EarlyKeys`): the run panel lists it at once."""
        self._connect()

    def _draw_provisional(self) -> None:
        """Before the run answers: the schedule it will start from (a demo's, computed without torch)."""
        if not getattr(self.source, "drawable", False) or self._drawn.get("provisional") == self.size:
            return
        status = self.source.status()
        self._update_schedule(status)
        self._draw_charts(status)
        self._drawn["provisional"] = self.size

    def on_resize(self) -> None:
        self._fit_layout()
        self.call_after_refresh(self.tick)

    def _fit_layout(self) -> None:
        """Narrow and tiny layouts follow the terminal's size. Checked every frame too: the app does
        not get every resize event (a resize under a modal, for one)."""
        if self.monitor_screen.fit(self.size):
            self._dirty = True

    # -- the frame --------------------------------------------------------------------------
    def tick(self) -> None:
        """Poll the run: new events, new data; redraw what changed."""
        if self._leaving:
            return
        self._fit_layout()
        if not self._connect():
            self._draw_provisional()
            return
        poll = getattr(self.source, "poll", None)  # a run directory being followed
        if poll is not None:
            poll()
        for event in self.source.events_since(self._events_seen):
            self._events_seen += 1
            self.step_clock.add(event.step, event.time)
            if event.kind == "race_end":  # known before the race's event is shown: a replay opens no table
                self.races_ended.add(event.data.get("race"))
            self.post_message(RunEvent(event))
        status = self.source.status()
        now = self.clock()
        self.rate.add(now, status.step)
        if status.live and not status.read_only:
            self.step_clock.add(status.step, self.wall_clock())
        self.update_offered()
        if self.monitor_screen.epochs_known != status.epochs_known:
            self.monitor_screen.epochs_known = status.epochs_known
            self._dirty = True
        race = status.race
        racing = (race["index"], race["step"]) if race else None  # its curves grow while the step stands
        columns = self._chart_columns(status.step)
        key = (columns, self.source.timeline, status.state, racing, self.monitor_screen.axis_mode)
        charts_due = now - self._drawn.get("at", -1e9) >= self.chart_interval - TIMER_SLACK
        draw_charts = self._dirty or (key != self._drawn.get("key") and charts_due)
        # The run panel's numbers move every step: once a second is enough to read them, and a change
        # of state (pause, finish, error) or a key shows at once. Updated with the charts when they
        # are drawn, so the screen is composed once for both.
        status_due = now - self._status_shown["at"] >= STATUS_INTERVAL - TIMER_SLACK
        if draw_charts or status_due or status.state != self._status_shown.get("state"):
            self._update_status(status)
            self._status_shown.update(state=status.state, at=now)
        self._update_schedule(status)
        if draw_charts:
            self._draw_charts(status)
            self._drawn.update(key=key, at=now)
            self._dirty = False
        self.release_waiting()

    @on(RunReady)
    def first_frame(self) -> None:
        self._dirty = True
        self.tick()

    @on(RunEvent)
    def show_event(self, message: RunEvent) -> None:
        """A run event, in order: the events panel, and for an error or a divergence alert, a modal."""
        event = message.event
        if self._leaving:
            return
        self.monitor_screen.add_event(event)
        self.lr_find_done(event)
        self.race_done(event)
        if event.kind in ("race", "race_start"):  # a race under way draws its candidates too: name them
            self._racing = list(event.data.get("names", [])) if event.kind == "race_start" else []
            if event.kind == "race":
                self.races.append(race_curves(event.data))
            self._titles()
        if event.kind == "error":
            self.push_screen(ErrorScreen(event.data["message"], event.data.get("traceback", "")))
        if event.kind == "divergence" and event.data.get("action") == "pause" and not self._quitting:
            d = event.data
            loss = float(d["loss"]) if d.get("loss") is not None else None
            alert = DivergenceScreen(d["at_step"], d["lr"], loss, d["cause"], d.get("rank"))
            self.push_screen(alert, self._after_divergence)
        if event.kind == "race_end" and event.data.get("kept", -1) >= 0:
            self.rate = StepRate()  # the kept steps arrived at once: they are no measure of steps/s
        if event.kind in ("switch", "edit", "finish", "race", "race_end"):
            self._redraw_now()

    # -- actions ----------------------------------------------------------------------------
    def _redraw_now(self) -> None:
        """Redraw right after the keys already queued: a burst of keys costs one frame, not one each."""
        if self._leaving:
            return
        self._titles()
        self._dirty = True
        if not self._redraw_pending:
            self._redraw_pending = True
            self.call_later(self._redraw_queued)

    def _redraw_queued(self) -> None:
        self._redraw_pending = False
        self.tick()

    def exit(self, *args: Any, **kwargs: Any) -> None:
        """Textual's exit; from here on nothing draws (the screen's widgets are being removed)."""
        self._leaving = True
        super().exit(*args, **kwargs)

    def action_metrics(self) -> None:
        """``m``: the metrics view, a grid of every metric (:mod:`lrwatch.app.metrics`)."""
        if not isinstance(self.screen, MetricsScreen):
            self.push_screen(MetricsScreen(options=self.monitor_screen.options))

    @on(ViewScreen.ViewChanged)
    def view_changed(self, message: ViewScreen.ViewChanged) -> None:
        """A view key on the screen: rebuild the loss EMA if its smoothing changed, and redraw."""
        if message.smoothing:
            self._loss_view = LossView(Ema(self.monitor_screen.smoothing))
        self._redraw_now()
