"""Modal screens: help, the spec editor, the error report, the divergence alert, the LR range test,
a race's results."""

from __future__ import annotations

import math

import numpy as np
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

HELP = """\
[b]Switch the schedule[/b] (lands at the next step boundary; the preview changes at once)
  [b]e[/b] exponential   [b]c[/b] cosine   [b]r[/b] cosine restarts (SGDR)   [b]s[/b] step decay
  [b]E C R S[/b]  show that schedule as a candidate from now, without switching
  [b]D[/b]        the cooldown as a candidate: decay from here, and end the run (a quarter of the steps so far)
  [b]v[/b]        show every kind as a candidate       [b]enter[/b] apply the shown candidate
  [b]escape[/b]   clear candidates
  [b]a[/b]        anchor for switches: continue from the current LR ↔ restart from the initial LR
[b]Tune the active schedule[/b]
  [b]:[/b] or [b]/[/b]    edit the spec, e.g. cosine:T_max=30,eta_min=1e-4 (same kind: edit; other kind: switch)
  [b]+ -[/b]      nudge the main parameter (gamma, T_max, T_0, step_size)
[b]View[/b]
  [b]l[/b] log-y on the LR chart   [b]L[/b] log-y on the loss chart   [b]w[/b] loss window: whole run ↔ recent
  [b]\\[ ][/b]  less / more EMA smoothing of the loss
[b]Run[/b]
  [b]space[/b] pause / resume    [b]k[/b] save a checkpoint (continue later with --resume RUN_DIR)
  [b]F[/b] LR range test from here (enter then starts the schedule from its suggestion)
  [b]f[/b] race the candidates shown (or every kind) against continuing, from here, on the same batches;
      escape cancels it; at the end enter keeps the selected one, escape restores the run as it was
  [b]q[/b] stop at a step boundary (saving a checkpoint when it can), flush the run directory and quit
      (in a monitor that attached to the run, q asks first: y stops the run)
  [b]d[/b] detach: the shell prompt comes back, training goes on (lrwatch attach brings the monitor back)
  [b]?[/b] this help

Specs: exp:gamma=G[,decay_steps=D]  cosine:T_max=T[,eta_min=E]
       cosine-restarts:T_0=T[,T_mult=M][,eta_min=E]  step:step_size=N[,gamma=G]   wsd  cooldown:length=L
       (times in epochs, or Nsteps; every kind takes warmup=W: see the README's Schedules)
Press escape or ? to close."""


class Modal(ModalScreen):
    """A modal that closes once, however many keys a storm sends while it is closing."""

    def close(self, result: object = None) -> None:
        if self.is_current:
            self.dismiss(result)

    def action_close(self) -> None:
        self.close(None)


class HelpScreen(Modal):
    BINDINGS = [Binding("escape,question_mark,q", "close", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(HELP, id="help-text")


class SpecEditor(Modal):
    """An input for a schedule spec; a bad spec is refused with its reason and nothing changes."""

    BINDINGS = [Binding("escape", "close", "cancel")]

    def __init__(self, initial: str) -> None:
        super().__init__()
        self.initial = initial

    def compose(self) -> ComposeResult:
        with Vertical(id="editor-box"):
            yield Static("Schedule spec  [dim](enter applies, escape cancels)[/dim]", id="editor-title")
            yield Input(value=self.initial, id="spec-input")
            yield Static("", id="spec-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        try:
            spec = parse_spec(event.value)
        except SpecError as exc:
            self.query_one("#spec-error", Static).update(f"[red]{exc}[/red]")
            return
        self.close(str(spec))

    def on_input_changed(self, _event: Input.Changed) -> None:
        self.query_one("#spec-error", Static).update("")


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


class LrFindScreen(Modal):
    """The LR range test's result: smoothed loss against log₁₀ lr, the two suggestions; ``enter`` switches
    the active schedule to start from the steepest one, ``escape`` leaves the run as it is."""

    BINDINGS = [Binding("enter", "choose('apply')", "apply"), Binding("escape", "close", "leave")]

    def __init__(self, result: dict, kind: str) -> None:
        super().__init__()
        self.result, self.kind = result, kind

    def compose(self) -> ComposeResult:
        d = self.result
        steepest = d.get("steepest")
        apply = f"[b]enter[/b] switch to {self.kind} from lr {lr_text(steepest)}   " if steepest else ""
        stopped = ", stopped when the loss passed 5× its best" if d.get("diverged") else ""
        with Vertical(id="lr-find-box"):
            yield Static(f"[b]LR range test[/b]: {d.get('points', 0)} batches{stopped}. Smoothed loss over log₁₀ lr:")
            yield Chart(id="lr-find-chart")
            yield Static(
                f"suggested lr [b]{lr_text(steepest)}[/b] (steepest descent) · "
                f"{lr_text(d.get('min_over_10'))} (min/10)\n"
                f"{apply}[b]escape[/b] leave the run as it is (it goes on from where it was either way)"
            )

    def on_mount(self) -> None:
        self.call_after_refresh(self._draw)  # once laid out: the chart is drawn at its size

    def on_resize(self) -> None:
        self.call_after_refresh(self._draw)

    def _draw(self) -> None:
        lrs, smoothed = np.asarray(self.result.get("lrs", []), float), np.asarray(self.result.get("smoothed", []))
        if not len(lrs):
            return
        x = np.log10(lrs)
        steepest = self.result.get("steepest")
        marks = [(float(np.log10(steepest)), MARKER_COLOR)] if steepest else []
        span = (float(x[0]), float(x[-1]) if x[-1] > x[0] else float(x[0]) + 1)
        self.query_one("#lr-find-chart", Chart).draw(
            lambda w, h: ChartSpec([Line(x, smoothed, PALETTE[1])], w, h, xlim=span, vlines=marks)
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
                f"[b]Race {d.get('race')}[/b]: {len(self.candidates)} candidates × {d.get('horizon')} steps from "
                f"step {d.get('fork', 0):,}, on the same batches; ranked by {by}"
            )
            yield DataTable(id="race-table", cursor_type="row", zebra_stripes=True)
            yield Static(id="race-torch")
            yield Static(
                f"[dim]Short horizons favour lower LRs (Wu et al. 2018): weigh a small Δ against H = "
                f"{d.get('horizon')} steps.[/dim]\n"
                "[b]↑↓[/b] select  [b]enter[/b] keep it: go on from its end state  "
                "[b]escape[/b] restore the run as it was"
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
