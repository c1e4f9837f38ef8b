"""The live monitor: LR and loss charts, status, schedule, events; schedule switching by key.

Data flows one way. The training thread appends to the history and logs events; this app polls
them on a timer (``--fps``) and redraws a chart only when its data, size or options changed.
It talks to the run only through :class:`~lrwatch.protocol.RunSource`: reads, and commands.
"""

from __future__ import annotations

import gc
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Footer, Static

from lrwatch.api import Host, run_loop
from lrwatch.app.charts import (
    APPLIED_COLOR,
    CANDIDATE_COLORS,
    EMA_COLOR,
    PREVIEW_COLOR,
    RAW_LOSS_COLOR,
    VAL_COLOR,
    LossView,
    PreviewCache,
    loss_chart,
    lr_chart,
    planned_end,
    plot_columns,
)
from lrwatch.app.screens import ConfirmStop, DivergenceScreen, ErrorScreen, HelpScreen, SpecEditor
from lrwatch.app.widgets import STATE_STYLES, Chart, EventLog, ViewApp, format_duration, progress_bar
from lrwatch.history import Ema
from lrwatch.plot import MARKER_COLOR, color_hex
from lrwatch.protocol import (
    LIVE_STATES,
    MONITOR_ONLY,
    Checkpoint,
    EditParams,
    Event,
    Pause,
    Resume,
    Rollback,
    RunSource,
    RunStatus,
    Stop,
    Switch,
)
from lrwatch.schedules import KINDS, SpecError, parse_spec
from lrwatch.timeline import Timeline

KIND_KEYS = {"e": "exp", "c": "cosine", "r": "cosine-restarts", "s": "step"}
MAIN_PARAM = {"exp": "gamma", "cosine": "T_max", "cosine-restarts": "T_0", "step": "step_size"}
NUDGE = 1.25
RATE_WINDOW_SECONDS = 3.0
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
LR_LEGEND = (
    f"[{color_hex(APPLIED_COLOR)}]━ applied[/] [{color_hex(PREVIEW_COLOR)}]━ ahead[/] "
    f"[{color_hex(MARKER_COLOR)}]│ switch[/]"
)
LOSS_LEGEND = f"[{color_hex(RAW_LOSS_COLOR)}]━ raw[/] [{color_hex(EMA_COLOR)}]━ ema[/] [{color_hex(VAL_COLOR)}]━ val[/]"


def nudged(kind: str, value: float, up: bool) -> float:
    """The main parameter one nudge up or down: times ×1.25; gamma moves its distance to 1 by ×1.25."""
    if MAIN_PARAM[kind] == "gamma":
        gap = (1 - value) / NUDGE if up else (1 - value) * NUDGE
        return float(f"{min(max(1 - gap, 1e-3), 1.0):.4g}")
    return float(f"{(value * NUDGE if up else value / NUDGE):.4g}")


class RunEvent(Message):
    """An event of the run (a switch, a pause, an error, ...), as a message to the app."""

    def __init__(self, event: Event) -> None:
        super().__init__()
        self.event = event


class LRWatchApp(ViewApp):
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
        Binding("v", "candidate_all", "compare", show=False),
        Binding("enter", "apply_candidate", "apply", show=False),
        Binding("escape", "clear_candidates", "clear", show=False),
        Binding("colon,slash", "edit_spec", "edit", key_display=":"),
        Binding("plus,equals_sign", "nudge(True)", "+", show=False),
        Binding("minus", "nudge(False)", "-", show=False),
        Binding("a", "toggle_anchor", "anchor", show=False),
        Binding("w", "toggle_window", "window", show=False),
        Binding("k", "checkpoint", "checkpoint", show=False),
        Binding("space", "pause", "pause"),
        Binding("question_mark", "help", "help", key_display="?"),
        Binding("d", "detach", "detach"),
        Binding("q", "quit_run", "quit"),
        Binding("ctrl+c,ctrl+q", "quit_run", "quit", show=False, priority=True),
    ]

    recent: reactive[bool] = reactive(False, init=False)  # the loss window: whole run ↔ the last two epochs
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
    ) -> None:
        """``owner``: this monitor started the run (``q`` stops it at once); an attached one asks first."""
        super().__init__()
        self.owner = owner
        self.detached = False  # d: the run goes on without us
        self.hung_up = False  # the terminal hung up: the same, unless the run was started with --on-hangup stop
        self.notes = list(notes or [])
        self.source: RunSource | None = source
        self.train = train
        self.host = host
        self.device = device
        self.fps = fps
        self.ascii_markers = ascii_markers
        self.clock = clock
        self.cpu_clock = cpu_clock
        self.chart_interval = CHART_MIN_INTERVAL
        self.thread: threading.Thread | None = None
        self.candidates: dict[str, Timeline] = {}
        self._candidate_step = -1
        self._preview = PreviewCache()
        self._loss_view = LossView(Ema(self.smoothing))
        self._events_seen = 0
        self._drawn: dict[str, Any] = {}
        self._status_shown: dict[str, Any] = {"at": -1e9}
        self._dirty = True
        self._rate_samples: deque[tuple[float, int]] = deque()
        self._quitting = False
        self._redraw_pending = False
        self._panels: dict[str, Text] = {}
        self._fitted_size: Any = None

    # -- layout -----------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="statusline")
        with Horizontal(id="main"):
            with Vertical(id="charts"):
                yield Chart(id="lr-chart")
                yield Chart(id="loss-chart")
            with Vertical(id="side"):
                yield Static(id="status")
                yield Static(id="schedule")
                yield EventLog(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.main_screen.query_one("#status").border_title = "run"
        self.main_screen.query_one("#schedule").border_title = "schedule"
        self.main_screen.query_one("#events").border_title = "events"
        self._titles()
        for note in self.notes:
            self.notify(note, severity="warning", timeout=8)
        if self.train is not None:
            self.thread = threading.Thread(target=self._run_training, name="lrwatch-train", daemon=True)
            self.thread.start()
        self.frame_timer = self.set_interval(1 / self.fps, self.tick)
        # Full collections with torch loaded take ~100 ms and land in a frame: once the app and the
        # loop are warm, move what exists out of the collector's sight (gc.freeze).
        self.set_timer(3.0, gc.freeze)
        self.call_after_refresh(self.tick)

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

    def _connect(self) -> bool:
        """Pick up the engine a script's lrwatch.watch() made, or the remote run's first snapshot;
        say what we wait for until then."""
        if self.source is None and self.host is not None and self.host.engine is not None:
            self.source = self.host.engine
            self._dirty = True
        ready = getattr(self.source, "ready", None)  # a run over its socket
        if ready is not None:
            for note in self.source.notes[:]:
                self.source.notes.remove(note)
                self.notify(note, severity="warning", timeout=6)
            if self.source.connection == "live" or (ready.is_set() and self.source.failure is None):
                return True
            if self.source.failure is not None and (ended := self.source.fallback()) is not None:
                self.source = ended  # it ended before we connected: its run directory, read-only
                self._dirty = True
                return True
            if self.source.failure is None:
                message = Text("starting the run, connecting to it …", style="dim")
            else:
                detail = self.source.detail()
                message = Text(f"✖ {self.source.failure}\n{detail}", style="bold red")
            self.main_screen.query_one("#status", Static).update(message)
            return False
        if self.source is not None:
            return True
        alive = self.thread is not None and self.thread.is_alive()
        if self.host is not None and self.host.error is not None:
            message = Text(f"✖ the script failed before lrwatch.watch():\n{self.host.error!r}", style="bold red")
        elif alive or self.thread is None:
            message = Text("waiting for the training loop to call lrwatch.watch() …", style="dim")
        else:
            message = Text("the script ended without calling lrwatch.watch()", style="bold yellow")
        self.main_screen.query_one("#status", Static).update(message)
        return False

    def on_resize(self) -> None:
        self._fit_layout()
        self.call_after_refresh(self.tick)

    def _fit_layout(self) -> None:
        """Narrow and tiny layouts follow the terminal's size. Checked every frame too: the app does
        not get every resize event (a resize under a modal, for one)."""
        if self.size == self._fitted_size:
            return
        self._fitted_size = self.size
        width, height = self.size
        self.main_screen.set_class(width < 90, "narrow")
        self.main_screen.set_class(width < 70 or height < 20, "tiny")
        self._dirty = True

    # -- the frame --------------------------------------------------------------------------
    def tick(self) -> None:
        """Poll the run: new events, new data; redraw what changed."""
        self._fit_layout()
        if not self._connect():
            return
        poll = getattr(self.source, "poll", None)  # a run directory being followed
        if poll is not None:
            poll()
        for event in self.source.events_since(self._events_seen):
            self._events_seen += 1
            self.post_message(RunEvent(event))
        status = self.source.status()
        now = self.clock()
        self._update_rate(status.step)
        key = (self._chart_column(status.step), self.source.timeline, status.state)
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

    @on(RunEvent)
    def show_event(self, message: RunEvent) -> None:
        """A run event, in order: the events panel, and for an error or a divergence alert, a modal."""
        event = message.event
        self.main_screen.query_one(EventLog).add(event)
        if event.kind == "error":
            self.push_screen(ErrorScreen(event.data["message"], event.data.get("traceback", "")))
        if event.kind == "divergence" and event.data.get("action") == "pause" and not self._quitting:
            d = event.data
            alert = DivergenceScreen(d["at_step"], d["lr"], float(d["loss"]), d["cause"])
            self.push_screen(alert, self._after_divergence)
        if event.kind in ("switch", "edit", "finish"):
            self._redraw_now()

    def _chart_column(self, step: int) -> int:
        """Which chart column the run is in: the charts are redrawn when it moves, not on every frame.

        The x axis spans the planned run, so new steps inside one column change nothing a redraw
        would show but the current column; waiting for the next one costs neither the UI's CPU
        (stolen from training) nor SSH bandwidth. The recent window scrolls, so it redraws each frame.
        """
        if self.recent:
            return step
        end = planned_end(self.source.timeline, step)
        columns = plot_columns(self.main_screen.query_one("#lr-chart", Chart).content_size.width)
        return step * columns // max(end, 1)

    def _draw_charts(self, status: RunStatus) -> None:
        started = self.cpu_clock()
        self._build_charts(status.step, drives_lr=status.drives_lr)
        cost = self.cpu_clock() - started
        self.chart_interval = min(max(cost / CHART_CPU_BUDGET, CHART_MIN_INTERVAL), CHART_MAX_INTERVAL)

    def _build_charts(self, step: int, *, drives_lr: bool) -> None:
        timeline = self.source.timeline
        history = self.source.history
        if self.candidates and abs(step - self._candidate_step) * 200 > max(timeline.total_steps or 0, 1):
            self._refresh_candidates(step)
        self.main_screen.query_one("#lr-chart", Chart).draw(
            lambda w, h: lr_chart(
                history,
                timeline,
                step,
                width=w,
                height=h,
                log_y=self.log_lr,
                ascii=self.ascii_markers,
                preview=self._preview if drives_lr else None,
                candidates=self.candidates,
            )
        )
        self.main_screen.query_one("#loss-chart", Chart).draw(
            lambda w, h: loss_chart(
                history,
                self._loss_view,
                timeline,
                step,
                width=w,
                height=h,
                log_y=self.log_loss,
                recent=self.recent,
                ascii=self.ascii_markers,
            )
        )

    def _titles(self) -> None:
        lr = self.main_screen.query_one("#lr-chart", Chart)
        lr.border_title = "learning rate" + (" · log" if self.log_lr else "")
        candidates = " ".join(f"[{color_hex(CANDIDATE_COLORS[k])}]━ {k}[/]" for k in self.candidates)
        lr.border_subtitle = candidates or LR_LEGEND
        loss = self.main_screen.query_one("#loss-chart", Chart)
        window = "recent" if self.recent else "whole run"
        loss.border_title = f"loss · ema {self.smoothing:g} · {window}" + (" · log" if self.log_loss else "")
        loss.border_subtitle = LOSS_LEGEND

    def _update_rate(self, step: int) -> None:
        now = self.clock()
        samples = self._rate_samples
        samples.append((now, step))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_SECONDS:
            samples.popleft()

    def steps_per_second(self) -> float:
        if len(self._rate_samples) < 2:
            return 0.0
        (t0, s0), (t1, s1) = self._rate_samples[0], self._rate_samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0

    def _update_status(self, status: RunStatus) -> None:
        state = status.state
        label, style = STATE_STYLES.get(state, (state, ""))
        step, total, k = status.step, status.total_steps, status.steps_per_epoch
        rate = self.steps_per_second() if state == "running" else 0.0
        last = self.source.history.last() or {}
        width = max(self.main_screen.query_one("#status").content_size.width, 10)
        lines = [Text.assemble((label, style), "  ", (self.device or status.device or "", "dim"))]
        epochs = f"{total / k:g}" if total else "?"
        lines.append(Text(f"epoch {step / k:.1f}/{epochs} · step {step:,}"))
        if total:
            lines.append(progress_bar(step / total, width - 5) + Text(f" {100 * step / total:3.0f}%"))
        eta = (total - step) / rate if total and rate > 0 else float("nan")
        lines.append(Text(f"{rate:,.0f} steps/s  ETA {format_duration(eta)}" if state == "running" else ""))
        lines.append(Text(f"lr {status.lr:.4g}  loss {last.get('loss', float('nan')):.4f}"))
        _, _, val = self.source.history.validation()
        if len(val.get("val_loss", ())):
            acc = val.get("val_acc")
            acc_text = f"  acc {100 * acc[-1]:.1f}%" if acc is not None and len(acc) else ""
            lines.append(Text(f"val {val['val_loss'][-1]:.4f}{acc_text}"))
        if status.run_dir:
            lines.append(Text(status.run_dir, style="dim", overflow="ellipsis", no_wrap=True))
        self._set_panel("#status", Text("\n").join(lines))
        if self.main_screen.has_class("tiny"):
            compact = Text.assemble((label, style), f"  ep {step / k:.1f}/{epochs}  lr {status.lr:.3g}  ")
            compact.append(str(self.source.timeline.segment_at(step).spec), style="bold")
            self._set_panel("#statusline", compact)

    def _set_panel(self, selector: str, text: Text) -> None:
        """Update a panel only when its text changed, and re-lay out only when its line count did:
        a layout pass every frame would cost more CPU than the panel itself."""
        previous = self._panels.get(selector)
        if previous is not None and previous.plain == text.plain and previous.spans == text.spans:
            return
        same_height = previous is not None and previous.plain.count("\n") == text.plain.count("\n")
        self._panels[selector] = text
        self.main_screen.query_one(selector, Static).update(text, layout=not same_height)

    def _update_schedule(self, status: RunStatus) -> None:
        if not status.drives_lr:
            self._set_panel("#schedule", Text(MONITOR_ONLY, style="yellow"))
            return
        timeline = self.source.timeline
        seg = timeline.segment_at(status.step)
        k = timeline.steps_per_epoch
        since = f"since epoch {seg.start_step / k:.4g}" if seg.start_step else "from the start"
        lines = [
            Text(str(seg.spec), style="bold"),
            Text(f"{since}, from lr {seg.base_lr:.4g}", style="dim"),
            Text(seg.schedule.torch_line(), style="#8fbcbb"),
            Text.assemble(
                "next switch: ", ("restart from initial LR" if self.anchor == "base" else "continue", "bold")
            ),
        ]
        if self.candidates:
            names = ", ".join(str(c.segments[-1].spec) for c in self.candidates.values())
            hint = "enter applies" if len(self.candidates) == 1 else "press e/c/r/s to switch"
            lines.append(Text.assemble(("candidate: ", "#e0a000"), names, (f" · {hint}", "dim")))
        self._set_panel("#schedule", Text("\n").join(lines))

    # -- actions ----------------------------------------------------------------------------
    def _step(self) -> int:
        return int(self.source.status().step) if self.source is not None else 0

    def _can_switch(self) -> bool:
        """Whether schedule commands make sense here; if not, say why."""
        if self.source is None:
            self.notify("No run yet: the training loop has not called lrwatch.watch().", severity="warning")
            return False
        status = self.source.status()
        if status.read_only:
            self.notify("A read-only view of a run: nothing to switch.", severity="warning")
            return False
        if not status.drives_lr:
            self.notify(MONITOR_ONLY, severity="warning")
            return False
        return True

    def _redraw_now(self) -> None:
        """Redraw right after the keys already queued: a burst of keys costs one frame, not one each."""
        self._titles()
        self._dirty = True
        if not self._redraw_pending:
            self._redraw_pending = True
            self.call_later(self._redraw_queued)

    def _redraw_queued(self) -> None:
        self._redraw_pending = False
        self.tick()

    def action_switch(self, kind: str) -> None:
        if not self._can_switch():
            return
        self.source.submit(Switch(kind, anchor=self.anchor))
        self.candidates.clear()
        self._redraw_now()

    def action_candidate(self, kind: str) -> None:
        if not self._can_switch():
            return
        if set(self.candidates) == {kind}:
            self.candidates.clear()
        else:
            self.candidates = {kind: self.source.timeline.switch(self._step(), kind, self.anchor)}
            self._candidate_step = self._step()
        self._redraw_now()

    def action_candidate_all(self) -> None:
        if not self._can_switch():
            return
        if len(self.candidates) == len(KINDS):
            self.candidates.clear()
        else:
            self._refresh_candidates(self._step(), list(KINDS))
        self._redraw_now()

    def _refresh_candidates(self, step: int, kinds: list[str] | None = None) -> None:
        timeline = self.source.timeline
        self.candidates = {kind: timeline.switch(step, kind, self.anchor) for kind in (kinds or list(self.candidates))}
        self._candidate_step = step

    def action_apply_candidate(self) -> None:
        if len(self.candidates) == 1:
            self.action_switch(next(iter(self.candidates)))
        elif self.candidates:
            self.notify("Several candidates shown: press e, c, r or s to switch to one.")

    def action_clear_candidates(self) -> None:
        self.candidates.clear()
        self._redraw_now()

    def action_edit_spec(self) -> None:
        if not self._can_switch():
            return
        seg = self.source.timeline.segment_at(self._step())

        def done(text: str | None) -> None:
            if text is None:
                return
            spec = parse_spec(text)
            if spec.kind == seg.schedule.kind and spec.anchor is None:
                self.source.submit(EditParams(spec.params))
            else:
                self.source.submit(Switch(text, anchor=spec.anchor or self.anchor))
            self._redraw_now()

        self.push_screen(SpecEditor(str(seg.spec)), done)

    def action_nudge(self, up: bool) -> None:
        if not self._can_switch():
            return
        seg = self.source.timeline.segment_at(self._step())
        name = MAIN_PARAM[seg.schedule.kind]
        value = nudged(seg.schedule.kind, seg.schedule.params()[name], up)
        try:
            seg.spec.with_params(**{name: value})
        except SpecError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.source.submit(EditParams(((name, value),)))
        self._redraw_now()

    def action_toggle_anchor(self) -> None:
        self.anchor = "base" if self.anchor == "continue" else "continue"

    def watch_anchor(self) -> None:
        if self.candidates:
            self._refresh_candidates(self._step())
        self._redraw_now()

    def action_toggle_window(self) -> None:
        self.recent = not self.recent

    def watch_recent(self) -> None:
        self._redraw_now()

    def redraw_view(self) -> None:
        self._redraw_now()

    def smoothing_changed(self, smoothing: float) -> None:
        self._loss_view = LossView(Ema(smoothing))

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
            return self.thread is not None and self.thread.is_alive()
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
            if self.thread is not None:
                alive = self.thread.is_alive()
            else:
                alive = closed is not None and not closed.is_set()
            if alive and self.clock() < deadline:
                self.set_timer(0.05, check)
                return
            failed = (self.source is not None and self.source.status().state == "error") or (
                self.host is not None and self.host.error is not None
            )
            self.exit(return_code=1 if failed else 0)

        check()
