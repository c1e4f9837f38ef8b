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
from textual.reactive import reactive
from textual.widgets import Footer, Static

from lrwatch.app.charts import (
    APPLIED_COLOR,
    CANDIDATE_COLORS,
    EMA_COLOR,
    PREVIEW_COLOR,
    RAW_LOSS_COLOR,
    VAL_COLOR,
    plot_columns,
    race_color,
)
from lrwatch.app.widgets import STATE_STYLES, Chart, EventLog, ViewScreen, format_duration, progress_bar
from lrwatch.charts.plot import MARKER_COLOR, ChartSpec, color_hex
from lrwatch.protocol.commands import MONITOR_ONLY, TAKE_OVER
from lrwatch.protocol.events import Event, RunStatus
from lrwatch.run.gpu import gpu_lines
from lrwatch.schedule.timeline import Timeline

LR_LEGEND = (
    f"[{color_hex(APPLIED_COLOR)}]━ applied[/] [{color_hex(PREVIEW_COLOR)}]━ ahead[/] "
    f"[{color_hex(MARKER_COLOR)}]│ switch[/]"
)
LOSS_LEGEND = f"[{color_hex(RAW_LOSS_COLOR)}]━ raw[/] [{color_hex(EMA_COLOR)}]━ ema[/] [{color_hex(VAL_COLOR)}]━ val[/]"
MakeSpec = Callable[[int, int], ChartSpec]


def race_line(race: dict[str, Any]) -> Text:
    """``race 1: 2/5 exp 120/468 · ETA 0:42 · esc cancels``: a race under way (two lines in a side panel)."""
    if race.get("phase") != "training":
        return Text(f"race {race['race']}: results ready, waiting for a choice", style="bold #e0a000")
    where = f"{race['index'] + 1}/{race['n']} {race['name']} {race['step']}/{race['horizon']}"
    eta = format_duration(race["eta"])
    return Text(f"race {race['race']}: {where} · ETA {eta} · esc cancels", style="bold #e0a000")


class MonitorScreen(ViewScreen):
    """The main screen: the layout, the panels and the view keys (log axes, smoothing, the loss window).

    Below 90 columns the side panels narrow; below 70×20 they give way to one status line above the
    charts (``narrow`` and ``tiny`` classes, see ``lrwatch.tcss``). The run keys live on the app.
    """

    BINDINGS = [Binding("w", "toggle_window", "window", show=False)]

    recent: reactive[bool] = reactive(False, init=False)  # the loss window: whole run ↔ the last two epochs

    def __init__(self) -> None:
        super().__init__(id="monitor")
        self._panels: dict[str, Text] = {}
        self._fitted: Size | None = None

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
        self.query_one("#status").border_title = "run"
        self.query_one("#schedule").border_title = "schedule"
        self.query_one("#events").border_title = "events"

    def action_toggle_window(self) -> None:
        self.recent = not self.recent

    def watch_recent(self) -> None:
        self.post_message(self.ViewChanged())

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

    def titles(self, candidates: Any, race_names: list[str] | None = None) -> None:
        """The charts' titles: the view options, and the legend (or the candidates shown; a race's)."""
        lr = self.query_one("#lr-chart", Chart)
        lr.border_title = "learning rate" + (" · log" if self.log_lr else "")
        shown = " ".join(f"[{color_hex(CANDIDATE_COLORS[k])}]━ {k}[/]" for k in candidates)
        lr.border_subtitle = shown or LR_LEGEND
        loss = self.query_one("#loss-chart", Chart)
        window = "recent" if self.recent else "whole run"
        loss.border_title = f"loss · ema {self.smoothing:g} · {window}" + (" · log" if self.log_loss else "")
        race = " ".join(f"[{color_hex(race_color(name))}]━ {name}[/]" for name in race_names or ())
        loss.border_subtitle = f"{LOSS_LEGEND} · race {race}" if race else LOSS_LEGEND

    def show_status(
        self, status: RunStatus, *, rate: float, device: str, last: dict[str, float], val: dict[str, Any], spec: str
    ) -> None:
        """The run panel (state, epoch and step, progress, rate and ETA, LR and loss, validation, run dir),
        and the one-line status in the tiny layout."""
        state = status.state
        label, style = STATE_STYLES.get(state, (state, ""))
        step, total, k = status.step, status.total_steps, status.steps_per_epoch
        width = max(self.query_one("#status").content_size.width, 10)
        where = device or status.device or ""
        if status.ranks > 1:
            where = f"{where} · rank 0 of {status.ranks}" if where else f"rank 0 of {status.ranks}"
        lines = [Text.assemble((label, style), "  ", (where, "dim"))]
        lines += [Text(line, style="dim") for line in gpu_lines(status.gpu)]
        epochs = f"{total / k:g}" if total else "?"
        where_in_run = f"epoch {step / k:.1f}/{epochs} · step {step:,}" if status.epochs_known else f"step {step:,}"
        lines.append(Text(where_in_run))
        if total:
            lines.append(progress_bar(step / total, width - 5) + Text(f" {100 * step / total:3.0f}%"))
        eta = (total - step) / rate if total and rate > 0 else float("nan")
        lines.append(Text(f"{rate:,.0f} steps/s  ETA {format_duration(eta)}" if state == "running" else ""))
        lines.append(Text(f"lr {status.lr:.4g}  loss {last.get('loss', float('nan')):.4f}"))
        if status.race:
            lines.append(race_line(status.race))
        if len(val.get("val_loss", ())):
            acc = val.get("val_acc")
            acc_text = f"  acc {100 * acc[-1]:.1f}%" if acc is not None and len(acc) else ""
            lines.append(Text(f"val {val['val_loss'][-1]:.4f}{acc_text}"))
        if status.run_dir:
            lines.append(Text(status.run_dir, style="dim", overflow="ellipsis", no_wrap=True))
        self._set_panel("#status", Text("\n").join(lines))
        if self.has_class("tiny"):
            at = f"ep {step / k:.1f}/{epochs}" if status.epochs_known else f"step {step:,}"
            compact = Text.assemble((label, style), f"  {at}  lr {status.lr:.3g}  ")
            compact.append_text(race_line(status.race) if status.race else Text(spec, style="bold"))
            self._set_panel("#statusline", compact)

    def show_schedule(
        self, status: RunStatus, timeline: Timeline, *, anchor: str, candidates: dict[str, Timeline]
    ) -> None:
        """The schedule panel: the active spec, since when and from which LR, its PyTorch line, the next
        switch's anchor, the candidates shown."""
        if not status.drives_lr:
            self._set_panel("#schedule", Text(TAKE_OVER if status.takes_over else MONITOR_ONLY, style="yellow"))
            return
        seg = timeline.segment_at(status.step)
        k = timeline.steps_per_epoch
        since = f"since epoch {seg.start_step / k:.4g}" if seg.start_step else "from the start"
        lines = [
            Text(str(seg.spec), style="bold"),
            Text(f"{since}, from lr {seg.base_lr:.4g}", style="dim"),
            Text(seg.schedule.torch_line(), style="#8fbcbb"),
            Text.assemble("next switch: ", ("restart from initial LR" if anchor == "base" else "continue", "bold")),
        ]
        if seg.schedule.kind == "plateau":  # its reductions depend on the metric: the preview cannot know them
            lines.insert(3, Text(f"flat ahead: drops follow {seg.schedule.params()['metric']}", style="yellow"))
        elif seg.end_step is not None:
            lines.insert(3, Text(f"the run ends at step {seg.end_step:,}", style="yellow"))
        if timeline.total_steps is None:  # the preview cannot know where the run ends
            unknown = "length unknown: a fitted switch asks for it"
            lines.insert(1, Text(unknown, style="yellow"))
        if candidates:
            names = ", ".join(str(c.segments[-1].spec) for c in candidates.values())
            hint = "enter applies" if len(candidates) == 1 else "press e/c/r/s to switch"
            lines.append(Text.assemble(("candidate: ", "#e0a000"), names, (f" · {hint}", "dim")))
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
