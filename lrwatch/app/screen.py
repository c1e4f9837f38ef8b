"""The monitor's screen: the layout (two charts; run, schedule and events panels; the footer) and
how each panel is drawn from what the app hands it. No run logic here: the app
(:class:`~lrwatch.app.monitor.LRWatchApp`) decides what to show and when; modals open on top.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.widgets import Footer, Static

from lrwatch.app.axis import next_mode
from lrwatch.app.candidates import Candidates
from lrwatch.app.charts import (
    APPLIED_COLOR,
    EMA_COLOR,
    PREVIEW_COLOR,
    RAW_LOSS_COLOR,
    VAL_COLOR,
    candidate_color,
    plot_columns,
    race_color,
)
from lrwatch.app.panels import race_line, schedule_lines, status_lines
from lrwatch.app.widgets import STATE_STYLES, Chart, EventLog, ViewOptions, ViewScreen
from lrwatch.charts.plot import MARKER_COLOR, ChartSpec, color_hex
from lrwatch.protocol.events import Event, RunStatus
from lrwatch.schedule.timeline import Timeline

LR_LEGEND = (
    f"[{color_hex(APPLIED_COLOR)}]━ applied[/] [{color_hex(PREVIEW_COLOR)}]━ ahead[/] "
    f"[{color_hex(MARKER_COLOR)}]│ switch[/]"
)
LOSS_LEGEND = f"[{color_hex(RAW_LOSS_COLOR)}]━ raw[/] [{color_hex(EMA_COLOR)}]━ ema[/] [{color_hex(VAL_COLOR)}]━ val[/]"
MakeSpec = Callable[[int, int], ChartSpec]
EVENTS_MIN_LINES = 3  # the events panel keeps at least this many lines, whatever the schedule panel shows
BORDER_ROWS = 2


class MonitorScreen(ViewScreen):
    """The main screen: the layout, the panels and the view keys (log axes, smoothing, the loss window,
    the x axis).

    Below 90 columns the side panels narrow; below 70×20 they give way to one status line above the
    charts (``narrow`` and ``tiny`` classes, see ``lrwatch.tcss``). The run keys live on the app.
    """

    BINDINGS = [
        Binding("w", "toggle_window", "window", show=False),
        Binding("x", "cycle_axis", "x axis", show=False),
    ]

    def __init__(self, options: ViewOptions | None = None) -> None:
        super().__init__(options=options, id="monitor")
        self._panels: dict[str, Text] = {}
        self._fitted: Size | None = None
        self.epochs_known = True  # the run counts epochs (else the x axis has no epochs to offer)

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
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#status").border_title = "run"
        self.query_one("#schedule").border_title = "schedule"
        self.query_one("#events").border_title = "events"

    @property
    def recent(self) -> bool:
        return self.options.recent

    def action_toggle_window(self) -> None:
        self.options.recent = not self.options.recent
        self.post_message(self.ViewChanged())

    def action_cycle_axis(self) -> None:
        self.options.axis = next_mode(self.axis_mode, self.epochs_known)
        self.post_message(self.ViewChanged())
        self.app.notify(f"x axis: {self.axis_name}", timeout=2)

    @property
    def axis_mode(self) -> str:
        """The x axis in use: epochs fall back to steps on a run without epochs."""
        mode = self.options.axis
        return "steps" if mode == "epochs" and not self.epochs_known else mode

    @property
    def axis_name(self) -> str:
        return {"epochs": "epochs", "steps": "steps", "time": "wall time"}[self.axis_mode]

    # -- layout -----------------------------------------------------------------------------
    def fit(self, size: Size) -> bool:
        """Narrow and tiny layouts for ``size``; ``True`` if the layout changed (redraw the charts)."""
        if size == self._fitted:
            return False
        self._fitted = size
        width, height = size
        self.set_class(width < 90, "narrow")
        self.set_class(width < 70 or height < 20, "tiny")
        return True

    @property
    def chart_columns(self) -> int:
        """Plot columns of the LR chart (the x axis's resolution)."""
        return plot_columns(self.query_one("#lr-chart", Chart).content_size.width)

    def _panel_width(self, selector: str) -> int:
        """The text width of a side panel: its content's, or what the CSS gives it before the first layout."""
        width = self.query_one(selector).content_size.width
        return width if width > 0 else (26 if self.has_class("narrow") else 32)

    # -- what it shows ----------------------------------------------------------------------
    def show_message(self, message: Text) -> None:
        """A line in the run panel while there is no run to show (starting, failed)."""
        self.query_one("#status", Static).update(message)

    def add_event(self, event: Event) -> None:
        for log in self.query(EventLog):  # none while the app is closing: a late event is dropped, not a crash
            log.add(event)

    def draw_charts(self, lr: MakeSpec, loss: MakeSpec) -> None:
        self.query_one("#lr-chart", Chart).draw(lr)
        self.query_one("#loss-chart", Chart).draw(loss)

    def titles(self, candidates: Candidates, race_names: list[str] | None = None, *, zoomed: bool = False) -> None:
        """The charts' titles: the view options and the x axis, and the legend (or the candidates shown;
        a race's). ``zoomed``: the whole-run loss chart shows the part of the run done so far."""
        axis = "" if self.axis_mode == "epochs" else f" · x {self.axis_name}"
        lr = self.query_one("#lr-chart", Chart)
        lr.border_title = "learning rate" + (" · log" if self.log_lr else "") + axis
        shown = " ".join(
            f"[{color_hex(candidate_color(slot))}]━ {kind}[/]" for slot, kind in enumerate(candidates.kinds())
        )
        lr.border_subtitle = shown or LR_LEGEND
        loss = self.query_one("#loss-chart", Chart)
        window = "recent" if self.recent else ("so far" if zoomed else "whole run")
        loss.border_title = f"loss · ema {self.smoothing:g} · {window}" + (" · log" if self.log_loss else "")
        race = " ".join(f"[{color_hex(race_color(name))}]━ {name}[/]" for name in race_names or ())
        loss.border_subtitle = f"{LOSS_LEGEND} · race {race}" if race else LOSS_LEGEND

    def show_status(
        self, status: RunStatus, *, rate: float, device: str, last: dict[str, float], val: dict[str, Any], spec: str
    ) -> None:
        """The run panel, and the one-line status in the tiny layout."""
        width = self._panel_width("#status")
        self._set_panel("#status", Text("\n").join(status_lines(status, rate=rate, device=device, last=last, val=val,
                                                                 width=width)))  # fmt: skip
        if self.has_class("tiny"):
            label, style = STATE_STYLES.get(status.state, (status.state, ""))
            k = status.steps_per_epoch
            total = f"{status.total_steps / k:g}" if status.total_steps else "?"
            at = f"ep {status.step / k:.1f}/{total}" if status.epochs_known else f"step {status.step:,}"
            compact = Text.assemble((label, style), f"  {at}  lr {status.lr:.3g}  ")
            compact.append_text(race_line(status.race) if status.race else Text(spec, style="bold"))
            self._set_panel("#statusline", compact)

    def schedule_budget(self) -> int | None:
        """Lines the schedule panel may take: the side column less the run panel and the events panel's
        minimum (None before the first layout)."""
        side = self.query_one("#side").size.height
        if side <= 0:
            return None
        status = self._panels.get("#status")
        status_rows = (status.plain.count("\n") + 1 if status is not None else 7) + BORDER_ROWS
        return max(side - status_rows - (EVENTS_MIN_LINES + BORDER_ROWS) - BORDER_ROWS, 2)

    def show_schedule(self, status: RunStatus, timeline: Timeline, *, anchor: str, candidates: Candidates) -> None:
        """The schedule panel (:func:`~lrwatch.app.panels.schedule_lines`), within its budget of lines."""
        lines = schedule_lines(status, timeline, anchor=anchor, candidates=candidates,
                               width=self._panel_width("#schedule"), height=self.schedule_budget())  # fmt: skip
        self._set_panel("#schedule", Text("\n").join(lines))

    def _set_panel(self, selector: str, text: Text) -> None:
        """Update a panel only when its text changed, and re-lay out only when its line count did:
        a layout pass every frame would cost more CPU than the panel itself."""
        previous = self._panels.get(selector)
        if previous is not None and previous.plain == text.plain and previous.spans == text.spans:
            return
        same_height = previous is not None and previous.plain.count("\n") == text.plain.count("\n")
        self._panels[selector] = text
        self.query_one(selector, Static).update(text, layout=not same_height)
