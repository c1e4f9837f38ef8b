"""The metrics view (``m``): a grid of small charts, one per metric the run logs, a page at a time.

Every step-level metric (``grad_norm``, ``acc``, the sampled ``steps_per_s``, ``cpu_percent``, ...) is drawn
as the loss is (its per-column band, faint, and its EMA at the smoothing ``[`` ``]`` set), every epoch-level
one (``val_f1``) as points per epoch. The grid fills the terminal: ``COLUMN_WIDTH`` columns and ``ROW_HEIGHT``
rows a chart (at 80×24 two by two), the rest on further pages (``n``/``p``, page down/up). ``/`` filters by
name (a glob when it has ``*?[``, else a substring), ``tab`` moves the selection, ``enter`` puts the selected
metric in the main view's second chart instead of the loss (``enter`` on it again: the loss), ``x`` cycles
the x axis (steps, epochs, wall time), ``escape`` or ``m`` returns.
"""

from __future__ import annotations

import fnmatch
import math
from typing import Any

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.widgets import Footer, Input, Static

from lrwatch.app.axis import XAxis, next_mode
from lrwatch.app.charts import EMA_COLOR, VAL_COLOR, column_envelope, plot_columns
from lrwatch.app.widgets import Chart, ViewOptions, ViewScreen
from lrwatch.charts.plot import ChartSpec, Line
from lrwatch.record.history import Ema, MetricHistory

COLUMN_WIDTH = 38  # a chart's least width: its y labels and some 30 columns of plot
ROW_HEIGHT = 10  # a chart's least height, border included
RAW_COLOR = 240


def matches(name: str, pattern: str) -> bool:
    """``pattern`` as a glob when it has ``*``, ``?`` or ``[``; else a substring (case-insensitive)."""
    if not pattern:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()


def grid_shape(width: int, height: int) -> tuple[int, int]:
    """``(columns, rows)`` of charts that fit ``width × height`` cells (one line each for the title and footer)."""
    return max(width // COLUMN_WIDTH, 1), max((height - 2) // ROW_HEIGHT, 1)


class MetricView:
    """One step-level metric's EMA, kept up to date a few points per frame (as the loss's)."""

    def __init__(self, smoothing: float) -> None:
        self.ema = Ema(smoothing)
        self.seen = 0
        self.steps = np.empty(0, dtype=np.int64)

    def update(self, history: MetricHistory, name: str) -> None:
        steps, values = history.metric(name, self.seen)
        if len(steps):
            self.ema.extend(values)
            self.steps = np.concatenate([self.steps, steps])
            self.seen += len(steps)


def metric_names(history: MetricHistory) -> list[str]:
    """Every metric the run logged: the step-level ones, then the epoch-level ones with a value."""
    _, _, val = history.validation()
    epoch_level = [name for name, values in val.items() if np.isfinite(values).any()]
    return [*history.metric_names(), *(n for n in epoch_level if n not in history.metric_names())]


def metric_chart(
    history: MetricHistory,
    name: str,
    view: MetricView | None,
    axis: XAxis,
    *,
    width: int,
    height: int,
    log_y: bool = False,
    ascii: bool = False,
) -> ChartSpec:
    """A metric's chart: a step-level one as its per-column band (min, max) and its EMA; an epoch-level one
    as a line through its values, one point per epoch."""
    columns = plot_columns(width)
    if view is not None:
        view.update(history, name)
        steps, values = history.metric_snapshot(name, 4 * columns)
        if not len(steps):
            return ChartSpec([], width, height, ascii=ascii)
        lo, hi = axis.at(float(steps[0])), axis.at(float(max(steps[-1], steps[0] + 1)))
        band_x, band_lo, band_hi = column_envelope(axis.x(steps), values, lo, hi, columns)
        rows, means = view.ema.column_means(0, max(columns // 2, 2))
        marker = "." if ascii else None
        lines = [Line(band_x, band_hi, RAW_COLOR, marker=marker), Line(band_x, band_lo, RAW_COLOR, marker=marker)]
        if view.ema.smoothing > 0 and len(rows):
            lines.append(Line(axis.x(view.steps[rows]), means, EMA_COLOR, marker="*" if ascii else None))
        return ChartSpec(lines, width, height, log_y=log_y, xlim=(lo, hi), ascii=ascii, x_suffix=axis.suffix)
    steps, _, val = history.validation()
    values = val.get(name, np.empty(0))
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if not len(steps):
        return ChartSpec([], width, height, ascii=ascii)
    lo, hi = axis.at(float(min(steps[0], 0))), axis.at(float(max(steps[-1], 1)))
    lines = [Line(axis.x(steps), values, VAL_COLOR, marker="o" if ascii or len(steps) < 3 else None)]
    return ChartSpec(lines, width, height, log_y=log_y, xlim=(lo, hi), ascii=ascii, x_suffix=axis.suffix)


def last_text(history: MetricHistory, name: str) -> str:
    """The metric's last value, 4 significant digits."""
    last = history.last_metrics().get(name)
    if last is None:
        _, _, val = history.validation()
        values = val.get(name, np.empty(0))
        finite = values[np.isfinite(values)]
        return f"{finite[-1]:.4g}" if len(finite) else ""
    return f"{last[1]:.4g}" if math.isfinite(last[1]) else str(last[1])


class MetricsScreen(ViewScreen):
    """Small charts of every metric, sized to the terminal, a page at a time (see the module's docstring)."""

    BINDINGS = [
        Binding("escape", "escape", "back"),
        Binding("m", "back", "back", show=False),
        Binding("n,pagedown", "page(1)", "next page"),
        Binding("p,pageup", "page(-1)", "prev page"),
        Binding("slash", "filter", "filter", key_display="/"),
        Binding("tab,right,down", "select(1)", "select", show=False),
        Binding("shift+tab,left,up", "select(-1)", "select back", show=False),
        Binding("enter", "to_main", "to main chart"),
        Binding("x", "cycle_axis", "x axis"),
    ]

    AUTO_FOCUS = None  # the filter's input, hidden, must not take the keys
    DEFAULT_CSS = """
    MetricsScreen #metrics-title { height: 1; padding: 0 1; }
    MetricsScreen #metrics-grid { height: 1fr; }
    MetricsScreen #metrics-filter { dock: bottom; display: none; }
    MetricsScreen #metrics-filter.shown { display: block; }
    MetricsScreen Chart.selected { border: round $accent; }
    MetricsScreen .metrics-empty { padding: 1 2; }
    """

    def __init__(self, options: ViewOptions | None = None) -> None:
        super().__init__(options=options, id="metrics")
        self.page = 0
        self.pattern = ""
        self.selected = 0
        self._views: dict[str, MetricView] = {}
        self._shown: list[str] = []
        self._shape: tuple[int, int] | None = None
        self._built: list[str] | None = None
        self._charts: list[Chart] = []

    def compose(self) -> ComposeResult:
        yield Static(id="metrics-title")
        yield Grid(id="metrics-grid")
        yield Input(placeholder="filter: a glob (grad*) or a substring; enter keeps it, escape clears",
                    id="metrics-filter", disabled=True)  # fmt: skip
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.set_interval(1.0, self.redraw)
        self.call_after_refresh(self.redraw)

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw)

    # -- what it shows ----------------------------------------------------------------------
    @property
    def history(self) -> MetricHistory | None:
        source = getattr(self.app, "source", None)
        return source.history if source is not None and getattr(self.app, "connected", True) else None

    def names(self) -> list[str]:
        history = self.history
        if history is None:
            return []
        return [name for name in metric_names(history) if matches(name, self.pattern)]

    @property
    def per_page(self) -> int:
        columns, rows = grid_shape(self.size.width, self.size.height)
        return columns * rows

    def redraw(self) -> None:
        """Lay out this page's charts (when the names or the size changed) and draw them."""
        history = self.history
        names = self.names()
        per_page = self.per_page
        pages = max(-(-len(names) // per_page), 1)
        self.page = min(self.page, pages - 1)
        shown = names[self.page * per_page : (self.page + 1) * per_page]
        self.selected = min(self.selected, max(len(shown) - 1, 0))
        shape = grid_shape(self.size.width, self.size.height)
        grid = self.query_one("#metrics-grid", Grid)
        if shown != self._built or shape != self._shape:
            self._built, self._shape = shown, shape
            grid.remove_children()
            columns, rows = shape
            grid.styles.grid_size_columns = min(columns, max(len(shown), 1))
            grid.styles.grid_size_rows = min(rows, max(-(-len(shown) // columns), 1))
            self._charts = [Chart() for _ in shown]  # no ids: the old charts may not be gone yet
            if shown:
                grid.mount_all(self._charts)
            else:
                grid.mount(Static(self._empty_text(history), classes="metrics-empty"))
            self.call_after_refresh(self.redraw)  # drawn once laid out, at their size
        self._shown = shown
        second = getattr(self.app, "second_metric", None)
        where = f" · filter {self.pattern}" if self.pattern else ""
        title = Text.assemble(("metrics", "bold"), f" · {len(names)} · page {self.page + 1}/{pages}{where}",
                              f" · ema {self.smoothing:g} · x {self.axis_name}")  # fmt: skip
        if second:
            title.append(f" · main chart: {second}", style="bold")
        self.query_one("#metrics-title", Static).update(title)
        if history is None:
            return
        axis = self.axis()
        for i, (name, chart) in enumerate(zip(shown, self._charts, strict=False)):
            if chart.is_mounted:
                step_level = name in history.metric_names()
                view = self._views.setdefault(name, MetricView(self.smoothing)) if step_level else None
                chart.border_title = f"{name} {last_text(history, name)}"
                chart.border_subtitle = "enter: main chart" if i == self.selected else ""
                chart.set_class(i == self.selected, "selected")
                chart.draw(lambda w, h, name=name, view=view: metric_chart(
                    history, name, view, axis, width=w, height=h, log_y=self.log_loss,
                    ascii=getattr(self.app, "ascii_markers", False)))  # fmt: skip

    def _empty_text(self, history: MetricHistory | None) -> Text:
        if history is None:
            return Text("waiting for the run…", style="dim")
        if self.pattern:
            return Text(f"no metric matches {self.pattern!r} (/ changes the filter)", style="dim")
        return Text("no metrics logged yet: monitor.step(loss, grad_norm=..., acc=...) logs them", style="dim")

    def axis(self) -> XAxis:
        app: Any = self.app
        step = app.source.status().step if getattr(app, "source", None) is not None else 0
        return app.axis(step) if hasattr(app, "axis") else XAxis("steps", 1)

    @property
    def axis_name(self) -> str:
        return {"epochs": "epochs", "steps": "steps", "time": "wall time"}.get(self.options.axis, self.options.axis)

    # -- keys -------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_page(self, delta: int) -> None:
        pages = max(-(-len(self.names()) // self.per_page), 1)
        self.page = (self.page + delta) % pages
        self.selected = 0
        self.redraw()

    def action_select(self, delta: int) -> None:
        if self._shown:
            self.selected = (self.selected + delta) % len(self._shown)
            self.redraw()

    def action_to_main(self) -> None:
        if not self._shown:
            return
        name = self._shown[self.selected]
        app: Any = self.app
        app.second_metric = None if getattr(app, "second_metric", None) == name else name
        shown = app.second_metric or "the loss"
        self.notify(f"main view's second chart: {shown}", timeout=3)
        if hasattr(app, "_redraw_now"):
            app._redraw_now()
        self.redraw()

    def action_cycle_axis(self) -> None:
        epochs_known = getattr(self.app, "epochs_known", True)
        self.options.axis = next_mode(self.options.axis, epochs_known)
        self._views.clear()
        self.post_message(self.ViewChanged())
        self.redraw()

    def action_filter(self) -> None:
        box = self.query_one("#metrics-filter", Input)
        box.value = self.pattern
        box.disabled = False
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.pattern = event.value.strip()
        self.page = self.selected = 0
        event.input.remove_class("shown")
        event.input.disabled = True
        self.set_focus(None)
        self.redraw()

    def action_escape(self) -> None:
        """Close the filter (clearing it) if open, else go back to the main view."""
        box = self.query_one("#metrics-filter", Input)
        if box.has_class("shown"):
            box.remove_class("shown")
            box.disabled = True
            self.pattern = ""
            self.set_focus(None)
            self.redraw()
        else:
            self.action_back()

    def on_view_screen_view_changed(self, message: ViewScreen.ViewChanged) -> None:
        if message.smoothing:
            self._views.clear()  # every EMA again, at the new smoothing
        self.call_after_refresh(self.redraw)
