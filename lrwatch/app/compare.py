"""``lrwatch view A B …``: several runs overlaid, each in its own colour, followed as they grow."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.reactive import reactive
from textual.widgets import Footer, Static

from lrwatch.app.charts import LossView, plot_columns
from lrwatch.app.widgets import Chart, ViewScreen
from lrwatch.charts.plot import PALETTE, ChartSpec, Line, color_hex
from lrwatch.record.history import Ema
from lrwatch.record.reader import RunReader


def run_summary(reader: RunReader) -> dict[str, object]:
    """Name, state, steps, last and best validation loss, and the schedules in order, for the runs table."""
    history = reader.history
    assert history is not None
    _, _, val = history.validation()
    val_loss = val.get("val_loss", np.empty(0))
    val_loss = val_loss[np.isfinite(val_loss)]
    timeline = reader.timeline
    return {
        "name": reader.name,
        "state": reader.status,
        "steps": len(history),
        "last_val_loss": float(val_loss[-1]) if len(val_loss) else None,
        "best_val_loss": float(val_loss.min()) if len(val_loss) else None,
        "schedules": [timeline.label_of(seg) for seg in timeline.segments] if timeline else [],
    }


class CompareScreen(ViewScreen):
    """The runs comparison's layout and view keys: the monitor's (log axes, smoothing) and ``v``."""

    BINDINGS = [
        Binding("v", "toggle_val", "train/val loss"),
        Binding("l", "toggle_log_lr", "log lr"),
        Binding("L", "toggle_log_loss", "log loss"),
    ]

    show_val: reactive[bool] = reactive(False, init=False)  # the loss chart: training EMA ↔ validation

    def compose(self) -> ComposeResult:
        with Horizontal(id="main"):
            with Vertical(id="charts"):
                yield Chart(id="lr-chart")
                yield Chart(id="loss-chart")
            with Vertical(id="side"):
                yield Static(id="runs")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#runs").border_title = "runs"
        self.query_one("#lr-chart").border_title = "learning rate"

    def action_toggle_val(self) -> None:
        self.show_val = not self.show_val

    def watch_show_val(self) -> None:
        self.post_message(self.ViewChanged())


class CompareRunsApp(App):
    CSS_PATH = "lrwatch.tcss"
    TITLE = "lrwatch view"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("q,ctrl+c", "quit", "quit", priority=True)]

    def __init__(self, readers: list[RunReader], *, fps: float = 2.0, ascii_markers: bool = False) -> None:
        super().__init__()
        self.readers = readers
        self.fps = fps
        self.ascii_markers = ascii_markers
        self.view = CompareScreen()
        self._views = [LossView(Ema(self.view.smoothing)) for _ in readers]

    async def on_mount(self) -> None:
        await self.push_screen(self.view)
        for reader in self.readers:
            for note in [*reader.skipped, reader.incomplete_tail()]:
                if note:
                    self.notify(f"{reader.name}: {note}", severity="warning", timeout=8)
        self.set_interval(1 / self.fps, self.tick)
        self.call_after_refresh(self.redraw)

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw)

    def tick(self) -> None:
        if any([reader.poll() for reader in self.readers]):
            self.redraw()

    def color(self, i: int) -> int:
        return PALETTE[i % len(PALETTE)]

    def redraw(self) -> None:
        loss = self.view.query_one("#loss-chart", Chart)
        what = "validation loss" if self.view.show_val else f"training loss · ema {self.view.smoothing:g}"
        loss.border_title = what + (" · log" if self.view.log_loss else "")
        self.view.query_one("#lr-chart", Chart).draw(self._lr_spec)
        loss.draw(self._loss_spec)
        self._update_table()

    def _x_end(self) -> float:
        ends = []
        for reader in self.readers:
            if reader.timeline is not None:
                k = reader.timeline.steps_per_epoch
                ends.append((reader.timeline.total_steps or len(reader.history)) / k)
        return max(ends or [1.0])

    def _lr_spec(self, width: int, height: int) -> ChartSpec:
        lines, vlines = [], []
        for i, reader in enumerate(self.readers):
            k = reader.timeline.steps_per_epoch if reader.timeline else 1
            snap = reader.history.snapshot(2 * plot_columns(width))
            lines.append(Line(snap.steps_lr / k, snap.lr, self.color(i), marker="*" if self.ascii_markers else None))
            if reader.timeline is not None:
                vlines += [(seg.start_step / k, self.color(i)) for seg in reader.timeline.segments[1:]]
        return ChartSpec(lines, width, height, log_y=self.view.log_lr, xlim=(0.0, self._x_end()), vlines=vlines)

    def _loss_spec(self, width: int, height: int) -> ChartSpec:
        lines = []
        columns = plot_columns(width)
        for i, (reader, view) in enumerate(zip(self.readers, self._views, strict=True)):
            k = reader.timeline.steps_per_epoch if reader.timeline else 1
            history = reader.history
            if self.view.show_val:
                steps, _, val = history.validation()
                x, y = steps, val.get("val_loss", np.empty(0))
            else:
                view.update(history)
                rows, y = view.ema.column_means(0, columns)
                x = history.steps_at(rows)
            lines.append(Line(x / k, y, self.color(i), marker="*" if self.ascii_markers else None))
        return ChartSpec(lines, width, height, log_y=self.view.log_loss, xlim=(0.0, self._x_end()))

    def _update_table(self) -> None:
        rows = []
        for i, reader in enumerate(self.readers):
            s = run_summary(reader)
            best = f"{s['best_val_loss']:.4f}" if s["best_val_loss"] is not None else "–"
            last = f"{s['last_val_loss']:.4f}" if s["last_val_loss"] is not None else "–"
            rows.append(Text.assemble(("━━ ", color_hex(self.color(i))), (str(s["name"]), "bold")))
            rows.append(Text(f"   {s['state']} · {s['steps']:,} steps", style="dim"))
            rows.append(Text(f"   val {last} (best {best})"))
            rows.extend(Text(f"   {spec}", style="#8fbcbb") for spec in s["schedules"])
        self.view.query_one("#runs", Static).update(Text("\n").join(rows))

    @on(ViewScreen.ViewChanged)
    def view_changed(self, message: ViewScreen.ViewChanged) -> None:
        if message.smoothing:
            self._views = [LossView(Ema(self.view.smoothing)) for _ in self.readers]
        self.redraw()
