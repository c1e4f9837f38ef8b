"""The run's length, asked for when a switch needs it: a default fitted to "the rest of the run" (``c`` in a
nanoGPT-style loop with no epochs, say) is never guessed. The prompt is prefilled with as many steps again as
were done so far; enter sends ``Length`` (then the switch), escape changes nothing."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Input, Static

from lrwatch.app.screens import Modal
from lrwatch.protocol.commands import parse_length


class LengthPrompt(Modal):
    """An input for the run's length (epochs, or ``Nsteps``); closes with the text, or ``None``. Styled as the
    spec editor (``#editor-box``)."""

    DEFAULT_CSS = """
    LengthPrompt {
        align: center middle;
        background: $background 60%;
    }
    """
    BINDINGS = [Binding("escape", "close", "cancel")]

    def __init__(self, why: str, done_steps: int, steps_per_epoch: int) -> None:
        super().__init__()
        self.initial = f"{max(2 * done_steps, 1)}steps"
        self.why, self.done_steps, self.steps_per_epoch = why, done_steps, steps_per_epoch

    def compose(self) -> ComposeResult:
        with Vertical(id="editor-box"):
            yield Static(
                f"The run's length is unknown, and {self.why} is fitted to it.\n"
                "Its length: epochs, or Nsteps  [dim](enter sets it and switches, escape cancels)[/dim]",
                id="editor-title",
            )
            yield Input(value=self.initial, id="spec-input")
            yield Static("", id="spec-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        span = parse_length(event.value)
        if span is None:
            self.query_one("#spec-error", Static).update("[red]a length > 0: epochs, or Nsteps (whole steps)[/red]")
            return
        if span.to_steps(self.steps_per_epoch) <= self.done_steps:
            self.query_one("#spec-error", Static).update(
                f"[red]{self.done_steps:,} steps are done already: give a longer run[/red]"
            )
            return
        self.close(event.value.strip())

    def on_input_changed(self, _event: Input.Changed) -> None:
        self.query_one("#spec-error", Static).update("")
