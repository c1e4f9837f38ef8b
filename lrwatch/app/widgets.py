"""Widgets of the monitor. They draw what they are given; none of them holds the engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget

from lrwatch.app.charts import next_smoothing
from lrwatch.app.textfit import tail_lines
from lrwatch.charts.plot import ChartSpec, render_rows
from lrwatch.protocol.events import Event
from lrwatch.record.console import describe


@dataclass
class ViewOptions:
    """How the charts are drawn, shared by every screen of one app (the main screen, a metrics view):
    a key changes it on one screen and every chart follows."""

    log_lr: bool = False
    log_loss: bool = False
    smoothing: float = 0.9  # the EMA's (0 … 0.999), for every smoothed chart
    axis: str = "epochs"  # the x axis: epochs, steps or time (falls back to steps on a run without epochs)
    recent: bool = False  # the loss chart's window: whole run ↔ the last two epochs


class ViewScreen(Screen):
    """A screen with the charts' view keys, shared by the monitor and ``lrwatch view``.

    A key changes the app's :class:`ViewOptions` and posts :class:`ViewChanged`, which bubbles to the
    app, and the app redraws (no action has to remember to).
    """

    BINDINGS = [
        Binding("l", "toggle_log_lr", "log lr", show=False),
        Binding("L", "toggle_log_loss", "log loss", show=False),
        Binding("left_square_bracket", "smoothing(-1)", "less smooth", show=False),
        Binding("right_square_bracket", "smoothing(1)", "smoother", show=False),
    ]

    class ViewChanged(Message):
        """A view option changed: redraw. ``smoothing``: the EMAs must be rebuilt first."""

        def __init__(self, *, smoothing: bool = False) -> None:
            super().__init__()
            self.smoothing = smoothing

    def __init__(self, *, options: ViewOptions | None = None, id: str | None = None) -> None:
        super().__init__(id=id)
        self.options = options if options is not None else ViewOptions()

    @property
    def log_lr(self) -> bool:
        return self.options.log_lr

    @property
    def log_loss(self) -> bool:
        return self.options.log_loss

    @property
    def smoothing(self) -> float:
        return self.options.smoothing

    def action_toggle_log_lr(self) -> None:
        self.options.log_lr = not self.options.log_lr
        self.post_message(self.ViewChanged())

    def action_toggle_log_loss(self) -> None:
        self.options.log_loss = not self.options.log_loss
        self.post_message(self.ViewChanged())

    def action_smoothing(self, direction: int) -> None:
        smoothing = next_smoothing(self.options.smoothing, direction)
        if smoothing != self.options.smoothing:
            self.options.smoothing = smoothing
            self.post_message(self.ViewChanged(smoothing=True))


class Chart(Widget):
    """A chart (plotext 5's drawing, by :mod:`lrwatch.charts.canvas`), rebuilt only when :meth:`draw` gets a new
    spec or the widget is resized.

    Drawn with Textual's line API: the rows are turned into strips once per build, and a repaint
    (a panel beside it changed, a modal closed) copies them, with no text layout in between.
    """

    DEFAULT_CSS = """
    Chart { width: 1fr; height: 1fr; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[list[Segment]] = []
        self._strips: list[Strip] = []
        self._strips_for: tuple[int, Style] | None = None  # the width and base style the strips were made at
        self.frames = 0

    def draw(self, make_spec: Callable[[int, int], ChartSpec]) -> None:
        """Build the chart at the widget's current size; ``make_spec(width, height)`` says what to draw."""
        width, height = self.content_size.width, self.content_size.height
        if width < 12 or height < 4:
            rows = [[Segment("(too small)", Style(dim=True))]]
        else:
            rows = render_rows(make_spec(width, height))
            self.frames += 1
        if rows == self._rows and self._strips_for is not None:
            return  # not a cell changed (a slow schedule moves a dot every few frames): nothing to send the tty
        self._rows = rows
        self._strips_for = None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width, base = self.content_size.width, self.visual_style.rich_style
        if self._strips_for != (width, base):  # a new build, a resize before the next one, a new theme
            self._strips = [Strip(row).apply_style(base).adjust_cell_length(width, base) for row in self._rows]
            self._strips_for = (width, base)
        return self._strips[y] if 0 <= y < len(self._strips) else Strip.blank(width, base)

    @property
    def text(self) -> str:
        """What the chart shows, as plain text (for tests and screen readers)."""
        return "\n".join("".join(segment.text for segment in row) for row in self._rows)


def progress_bar(fraction: float, width: int) -> Text:
    fraction = min(max(fraction, 0.0), 1.0)
    filled = round(fraction * width)
    return Text.assemble(("━" * filled, "bold #2f9ee0"), ("━" * (width - filled), "#3a3a3a"))


def format_duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf") or seconds < 0:
        return "--:--"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


STATE_STYLES = {
    "starting": ("○ starting", "dim"),
    "created": ("○ starting", "dim"),
    "running": ("● running", "bold green"),
    "paused": ("‖ paused", "bold yellow"),
    "stopping": ("◌ stopping", "bold yellow"),
    "stopped": ("■ stopped", "bold"),
    "finished": ("✔ finished", "bold cyan"),
    "error": ("✖ error", "bold red"),
    "lost": ("✖ run lost", "bold red"),  # an attached monitor whose run process is gone
}


class EventLog(Widget):
    """The last events, newest at the bottom: switches, edits, pauses, errors, rejected commands.

    Laid out when drawn, at the size it has then, from the newest up: the newest event always shows,
    whatever happened to the panel's height since it came (a candidate list above it grew, a resize).
    """

    DEFAULT_CSS = "EventLog { height: 1fr; }"
    KEPT = 50

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines: list[Text] = []

    def add(self, event: Event) -> None:
        line = describe_event(event)
        if line is not None:
            self.lines.append(line)
            del self.lines[: -self.KEPT]
            self.refresh()

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        return Text("\n").join(tail_lines(self.lines, max(width, 1), max(height, 1)))

    @property
    def shown(self) -> str:
        """What the panel shows now, as plain text (for tests)."""
        return self.render().plain


def describe_event(event: Event) -> Text | None:
    """One line for the events panel (the words are :func:`lrwatch.record.console.describe`'s), or ``None``."""
    text = describe(event)
    if text is None:
        return None
    step = Text(f"{event.step:>6} ", style="dim")
    if not text.detail:
        return step + Text(text.label, style=text.style)
    return step + Text.assemble((f"{text.label} ", text.style), text.detail)
