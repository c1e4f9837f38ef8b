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

from textual import on
from textual.app import App
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive

from lrwatch.app.charts import (
    LossView,
    PreviewCache,
    RaceCurves,
    StepRate,
    loss_chart,
    lr_chart,
    planned_end,
    race_curves,
)
from lrwatch.app.keys import ScheduleKeys
from lrwatch.app.link import RunLink
from lrwatch.app.screen import MonitorScreen
from lrwatch.app.screens import ConfirmStop, DivergenceScreen, ErrorScreen, HelpScreen
from lrwatch.app.widgets import ViewScreen
from lrwatch.live.host import Host
from lrwatch.protocol.commands import Checkpoint, Pause, Resume, Rollback, Stop
from lrwatch.protocol.events import LIVE_STATES, Event, RunSource, RunStatus
from lrwatch.record.history import Ema
from lrwatch.schedule.timeline import Timeline

QUIT_WAIT_SECONDS = 10.0
# New data redraws the charts at most this often (a key press, a switch or a resize at once): a full
# redraw is ~15 KB of terminal output and, at 120×40, ~8 ms of CPU taken from training. On a larger
# terminal a redraw costs more, so the interval stretches to keep the builds within CHART_CPU_BUDGET
# of a core (up to CHART_MAX_INTERVAL).
CHART_MIN_INTERVAL = 1.0
CHART_MAX_INTERVAL = 4.0
CHART_CPU_BUDGET = 0.01
STATUS_INTERVAL = 1.0
TIMER_SLACK = 0.05  # frames land a few ms early or late: "a second since" must not mean every other frame


class RunEvent(Message):
    """An event of the run (a switch, a pause, an error, ...), as a message to the app."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class RunReady(Message):
    """A remote run's first snapshot arrived: draw now rather than at the next frame."""


class LRWatchApp(ScheduleKeys, App):
    CSS_PATH = "lrwatch.tcss"
    TITLE = "lrwatch"
    ENABLE_COMMAND_PALETTE = False

    BINDINGS = [
        Binding("e", "switch('exp')", "exp"),
        Binding("c", "switch('cosine')", "cos"),
        Binding("r", "switch('cosine-restarts')", "restarts"),
        Binding("s", "switch('step')", "step"),
        Binding("E", "candidate('exp')", "preview exp", show=False),
        Binding("C", "candidate('cosine')", "preview cosine", show=False),
        Binding("R", "candidate('cosine-restarts')", "preview restarts", show=False),
        Binding("S", "candidate('step')", "preview step", show=False),
        Binding("D", "candidate('cooldown')", "preview cooldown", show=False),
        Binding("v", "candidate_all", "compare", show=False),
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
        self.chart_interval = CHART_MIN_INTERVAL
        self.candidates: dict[str, Timeline] = {}
        self.races: list[RaceCurves] = []  # the races seen: their candidates' curves stay drawn
        self._racing: list[str] = []  # the candidates of a race under way
        self.races_ended: set[int] = set()
        self._candidate_step = -1
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
        self._dirty = self._dirty or changed
        while self.link.notes:
            self.notify(self.link.notes.pop(0), severity="warning", timeout=6)
        if message is not None:
            self.monitor_screen.show_message(message)
        return ready

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
            return
        poll = getattr(self.source, "poll", None)  # a run directory being followed
        if poll is not None:
            poll()
        for event in self.source.events_since(self._events_seen):
            self._events_seen += 1
            if event.kind == "race_end":  # known before the race's event is shown: a replay opens no table
                self.races_ended.add(event.data.get("race"))
            self.post_message(RunEvent(event))
        status = self.source.status()
        now = self.clock()
        self.rate.add(now, status.step)
        race = status.race
        racing = (race["index"], race["step"]) if race else None  # its curves grow while the step stands
        key = (self._chart_column(status.step), self.source.timeline, status.state, racing)
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
        if event.kind in ("switch", "edit", "finish", "race", "race_end"):
            self._redraw_now()

    def _chart_column(self, step: int) -> int:
        """Which chart column the run is in: the charts are redrawn when it moves, not on every frame.

        The x axis spans the planned run, so new steps inside one column change nothing a redraw
        would show but the current column; waiting for the next one costs neither the UI's CPU
        (stolen from training) nor SSH bandwidth. The recent window scrolls, so it redraws each frame.
        """
        if self.monitor_screen.recent:
            return step
        end = planned_end(self.source.timeline, step)
        return step * self.monitor_screen.chart_columns // max(end, 1)

    def _draw_charts(self, status: RunStatus) -> None:
        started = self.cpu_clock()
        self._build_charts(status.step, drives_lr=status.drives_lr, race=status.race)
        cost = self.cpu_clock() - started
        self.chart_interval = min(max(cost / CHART_CPU_BUDGET, CHART_MIN_INTERVAL), CHART_MAX_INTERVAL)

    def _build_charts(self, step: int, *, drives_lr: bool, race: dict | None = None) -> None:
        view = self.monitor_screen
        training = race is not None and race.get("phase") == "training"  # then the race event draws it
        races = [*self.races, race_curves(race)] if training else self.races
        timeline = self.source.timeline
        history = self.source.history
        if self.candidates and abs(step - self._candidate_step) * 200 > max(timeline.total_steps or 0, 1):
            self._refresh_candidates(step)
        self.monitor_screen.draw_charts(
            lambda w, h: lr_chart(
                history,
                timeline,
                step,
                width=w,
                height=h,
                log_y=view.log_lr,
                ascii=self.ascii_markers,
                preview=self._preview if drives_lr else None,
                candidates=self.candidates,
            ),
            lambda w, h: loss_chart(
                history,
                self._loss_view,
                timeline,
                step,
                width=w,
                height=h,
                log_y=view.log_loss,
                recent=view.recent,
                ascii=self.ascii_markers,
                races=races,
            ),
        )

    def _titles(self) -> None:
        names = dict.fromkeys([*(name for _, _, named in self.races for name, _, _ in named), *self._racing])
        self.monitor_screen.titles(self.candidates, list(names))

    def _update_status(self, status: RunStatus) -> None:
        history = self.source.history
        self.monitor_screen.show_status(
            status,
            rate=self.rate.per_second() if status.state == "running" else 0.0,
            device=self.device,
            last=history.last() or {},
            val=history.validation()[2],
            spec=str(self.source.timeline.segment_at(status.step).spec),
        )

    def _update_schedule(self, status: RunStatus) -> None:
        self.monitor_screen.show_schedule(status, self.source.timeline, anchor=self.anchor, candidates=self.candidates)

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

    @on(ViewScreen.ViewChanged)
    def view_changed(self, message: ViewScreen.ViewChanged) -> None:
        """A view key on the screen: rebuild the loss EMA if its smoothing changed, and redraw."""
        if message.smoothing:
            self._loss_view = LossView(Ema(self.monitor_screen.smoothing))
        self._redraw_now()

    def _after_divergence(self, choice: str | None) -> None:
        if self.source is None or choice is None:
            return
        if choice == "rollback":
            self.source.submit(Rollback())
            self.source.submit(Resume())
        elif choice == "resume":
            self.source.submit(Resume())
        elif choice == "stop":
            self.source.submit(Stop("divergence"))

    def action_checkpoint(self) -> None:
        if self.source is not None and not self.source.status().read_only:
            self.source.submit(Checkpoint())

    def action_pause(self) -> None:
        if self.source is None or self.source.status().read_only:
            return
        state = self.source.status().state
        self.source.submit(Resume() if state == "paused" else Pause())

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_detach(self) -> None:
        """Leave the run training and give the shell back (the run is a process of its own)."""
        detach = getattr(self.source, "detach", None)
        if detach is None:
            self.notify("This run trains inside this process: q stops it.", severity="warning")
            return
        detach()
        self.detached = True
        self.exit(return_code=0)

    def _run_live(self) -> bool:
        if self.source is None:
            return self.link.training
        return self.source.status().state in (*LIVE_STATES, "stopping")

    def action_quit_run(self) -> None:
        """Owner: stop the run at a step boundary, wait for it to flush, exit. Attached: ask first."""
        if self._quitting or isinstance(self.screen, ConfirmStop):
            return
        if not self.owner and self.source is not None and self._run_live():
            self.push_screen(ConfirmStop(), self._after_confirm)
            return
        self._stop_and_exit()

    def _after_confirm(self, stop: bool | None) -> None:
        if stop:
            self._stop_and_exit()

    def _stop_and_exit(self) -> None:
        self._quitting = True
        if self.source is not None and self.source.status().live:
            self.source.submit(Stop("quit"))
        deadline = self.clock() + QUIT_WAIT_SECONDS
        closed = getattr(self.source, "closed", None)

        def check() -> None:
            if self.link.thread is not None:
                alive = self.link.training
            else:
                alive = closed is not None and not closed.is_set()
            if alive and self.clock() < deadline:
                self.set_timer(0.05, check)
                return
            self.exit(return_code=1 if self.link.failed else 0)

        check()
