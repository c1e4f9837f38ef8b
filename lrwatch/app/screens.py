"""Modal screens: the spec editor, the error report, the divergence alert, the LR range test,
a race's results."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Static

from lrwatch.app.widgets import Chart
from lrwatch.charts.plot import MARKER_COLOR, PALETTE, ChartSpec, Line
from lrwatch.record.console import lr_text
from lrwatch.schedule.spec import SpecError, parse_spec

SKIP_START, SKIP_END = 10, 5  # torch-lr-finder's plot(skip_start=10, skip_end=5)


class Modal(ModalScreen):
    """A modal that closes once, however many keys a storm sends while it is closing."""

    def close(self, result: object = None) -> None:
        if self.is_current:
            self.dismiss(result)

    def action_close(self) -> None:
        self.close(None)


class SpecEditor(Modal):
    """An input for a schedule spec; a bad spec is refused with its reason and nothing changes. Under it,
    while the spec parses, one line on what follows its cycle when that ends before the run (``note``)."""

    BINDINGS = [Binding("escape", "close", "cancel")]

    def __init__(self, initial: str, note: Callable[[str], str | None] | None = None) -> None:
        super().__init__()
        self.initial = initial
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="editor-box"):
            yield Static("Schedule spec  [dim](enter applies, escape cancels)[/dim]", id="editor-title")
            yield Input(value=self.initial, id="spec-input")
            yield Static("", id="spec-error")

    def on_mount(self) -> None:
        self._show_note(self.initial)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            spec = parse_spec(event.value)
        except SpecError as exc:
            self.query_one("#spec-error", Static).update(Text(str(exc), style="red"))
            return
        self.close(str(spec))

    def on_input_changed(self, event: Input.Changed) -> None:
        self._show_note(event.value)

    def _show_note(self, text: str) -> None:
        note = self.note(text) if self.note is not None else None
        self.query_one("#spec-error", Static).update(Text(f"⚠ {note}", style="yellow") if note else "")


class DivergenceScreen(Modal):
    """The loss diverged and training is paused: roll back, resume as is, or stop."""

    BINDINGS = [
        Binding("r", "choose('rollback')", "roll back"),
        Binding("space", "choose('resume')", "resume"),
        Binding("s", "choose('stop')", "stop"),
        Binding("escape", "close", "close"),
    ]

    def __init__(self, step: int, lr: float, loss: float | None, cause: str, rank: int | None = None) -> None:
        super().__init__()
        self.step, self.lr, self.loss, self.cause, self.rank = step, lr, loss, cause, rank

    def compose(self) -> ComposeResult:
        what = {"non-finite": "is not finite", "spike": "spiked"}.get(self.cause, "diverged")
        whose = "The loss" if self.rank is None else f"The loss of rank {self.rank}"
        loss = f"loss {self.loss:.4g}, " if self.loss is not None else ""
        with Vertical(id="divergence-box"):
            yield Static(
                f"[b red]{whose} {what} at step {self.step:,}[/]  ({loss}lr {self.lr:.4g})\n"
                "Training is paused at the next step boundary.\n\n"
                "[b]r[/b] roll back to the last good weights and halve the LR   "
                "[b]space[/b] resume as is   [b]s[/b] stop   [b]escape[/b] close"
            )

    def action_choose(self, choice: str) -> None:
        self.close(choice)


class ErrorScreen(Modal):
    """The training loop raised: its traceback, while the app stays up for inspection."""

    BINDINGS = [Binding("escape,enter", "close", "close")]

    def __init__(self, message: str, traceback: str) -> None:
        super().__init__()
        self.message = message
        self.traceback = traceback

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="error-box"):
            yield Static(f"[b red]Training stopped with an error[/]\n{self.message}\n", markup=True)
            yield Static(self.traceback, markup=False, id="error-traceback")
            yield Static("[dim]Metrics up to here are in the run directory. escape: close · q: quit[/dim]")


class ConfirmStop(Modal):
    """An attached monitor's ``q``: the run may have trained for days; one stray key must not end it."""

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-box"):
            yield Static(
                "[b]Stop the run?[/b] It is not this monitor's: it trains in its own process.\n"
                "[b]y[/b] stops it at the next step boundary (checkpoint, flush) · any other key returns"
            )

    def on_key(self, event: events.Key) -> None:
        event.stop()
        event.prevent_default()
        self.close(event.key == "y")


def clipped_curve(lrs: np.ndarray, smoothed: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The range test's curve as ``torch-lr-finder``'s ``plot()`` draws it: the first :data:`SKIP_START` and
    last :data:`SKIP_END` batches left out (the start is noise, the end the blow-up that stopped the test),
    where enough remain; ``(lrs, smoothed, first, last)`` with the batches kept (1-based, inclusive)."""
    n = min(len(lrs), len(smoothed))
    start, end = (SKIP_START, n - SKIP_END) if n >= SKIP_START + SKIP_END + 2 else (0, n)
    return lrs[start:end], smoothed[start:end], start + 1, end


class LrFindScreen(Modal):
    """The LR range test's result: smoothed loss against log₁₀ lr (clipped as ``torch-lr-finder`` plots it;
    ``l`` log-y), the two suggestions; ``enter`` makes the steepest one a candidate (one more ``enter`` on
    the main screen applies it), ``escape`` leaves the run as it is."""

    BINDINGS = [
        Binding("enter", "choose('apply')", "candidate"),
        Binding("l", "toggle_log", "log-y"),
        Binding("escape", "close", "leave"),
    ]

    def __init__(self, result: dict, kind: str) -> None:
        super().__init__()
        self.result, self.kind = result, kind
        self.log_y = False

    def compose(self) -> ComposeResult:
        d = self.result
        steepest = d.get("steepest")
        apply = f"[b]enter[/b] {self.kind} from it as a candidate · " if steepest else ""
        stopped = ", stopped at 5× its best loss" if d.get("diverged") else ""
        lrs = np.asarray(d.get("lrs", []), float)
        _, _, first, last = clipped_curve(lrs, np.asarray(d.get("smoothed", []), float))
        shown = f"batches {first}–{last} (as torch-lr-finder plots them)" if len(lrs) else "no batches"
        with Vertical(id="lr-find-box"):
            yield Static(
                f"[b]LR range test[/b]: {d.get('points', 0)} batches{stopped}\n"
                f"[dim]smoothed loss over lr, {shown}[/dim]",
                id="lr-find-title",
            )
            yield Chart(id="lr-find-chart")
            yield Static(
                f"suggested lr [b]{lr_text(steepest)}[/b] (steepest descent) · {lr_text(d.get('min_over_10'))} "
                f"(min/10)\n{apply}[b]l[/b] log-y · [b]escape[/b] close"
            )

    def on_mount(self) -> None:
        self.call_after_refresh(self._draw)  # once laid out: the chart is drawn at its size

    def on_resize(self) -> None:
        self.call_after_refresh(self._draw)

    def action_toggle_log(self) -> None:
        self.log_y = not self.log_y
        self._draw()

    def _draw(self) -> None:
        lrs, smoothed = np.asarray(self.result.get("lrs", []), float), np.asarray(self.result.get("smoothed", []))
        lrs, smoothed, _, _ = clipped_curve(lrs, smoothed)
        keep = lrs > 0
        lrs, smoothed = lrs[keep], smoothed[keep]
        if not len(lrs):
            return
        x = np.log10(lrs)
        steepest = self.result.get("steepest")
        marks = [(float(np.log10(steepest)), MARKER_COLOR)] if steepest else []
        span = (float(x[0]), float(x[-1]) if x[-1] > x[0] else float(x[0]) + 1)
        self.query_one("#lr-find-chart", Chart).draw(
            lambda w, h: ChartSpec(
                [Line(x, smoothed, PALETTE[1])], w, h, xlim=span, vlines=marks, log_y=self.log_y, x_log=True
            )
        )

    def action_choose(self, choice: str) -> None:
        self.close(choice)


class RaceScreen(Modal):
    """A race's results: per candidate its train loss (EMA), val loss and Δ val against continuing, the
    winner marked and selected. ``enter`` keeps the selected candidate (the run goes on from its end
    state), ``escape`` restores the snapshot (the run goes on as if there had been no race)."""

    BINDINGS = [Binding("enter", "keep", "keep"), Binding("escape", "close", "restore")]

    def __init__(self, result: dict) -> None:
        super().__init__()
        self.result = result
        self.candidates = result.get("candidates", [])

    def compose(self) -> ComposeResult:
        d = self.result
        by = "val loss" if d.get("evaluated") else "train loss (no evaluate= given)"
        with Vertical(id="race-box"):
            yield Static(
                f"[b]Race {d.get('race')}[/b] · {len(self.candidates)} candidates × {d.get('horizon')} steps from "
                f"step {d.get('fork', 0):,} · ranked by {by}"
            )
            yield DataTable(id="race-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="race-torch")
            yield Static(
                f"[dim]A short horizon favours lower LRs (Wu et al. 2018): H = {d.get('horizon')} steps.[/dim]\n"
                "[b]↑↓[/b] select · [b]enter[/b] keep it (go on from its end) · [b]escape[/b] restore the run"
            )

    def on_mount(self) -> None:
        table = self.query_one("#race-table", DataTable)
        table.add_columns("", "candidate", "train loss", "val loss", "Δ val")
        best = self.result.get("best", -1)
        for i, c in enumerate(self.candidates):
            mark = "★" if i == best else ("✖" if c.get("diverged") else "")
            name = c["spec"] if c["name"] != "continue" else f"continue ({c['spec']})"
            delta = "" if i == 0 else _number(c.get("delta_val"), signed=True)
            table.add_row(mark, name, _number(c.get("train_loss")), _number(c.get("val_loss")), delta)
        if best >= 0:
            table.move_cursor(row=best)
        table.focus()
        self._show_torch(table.cursor_row)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_torch(event.cursor_row)

    def _show_torch(self, row: int) -> None:
        if 0 <= row < len(self.candidates):
            self.query_one("#race-torch", Static).update(f"[#8fbcbb]{self.candidates[row]['torch']}[/]")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()  # the table takes enter: keep the row it selected
        self.close(event.cursor_row)

    def action_keep(self) -> None:
        self.close(self.query_one("#race-table", DataTable).cursor_row)


def _number(value: float | str | None, signed: bool = False) -> str:
    """A loss in the race table; "–" for none (a NaN may have travelled as the string "nan")."""
    number = float(value) if value is not None else math.nan
    if not math.isfinite(number):
        return "–"
    return f"{number:+.4f}" if signed else f"{number:.4f}"
