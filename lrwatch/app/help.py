"""``?``: the keys, laid out to fit the terminal: sections in columns (two from 76 columns on), pages
when they do not fit its height, descriptions wrapped under themselves (never mid-word), how to close it
on the first line. A read-only view lists only the keys that work there."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Static

from lrwatch.app.screens import Modal
from lrwatch.app.textfit import wrap

Entry = tuple[str, str]  # (keys, what they do)
Section = tuple[str, list[Entry]]

SWITCH: Section = ("Switch the schedule (next step)", [
    ("e c r s", "exp, cosine, SGDR, step decay (fitted to the run)"),
    ("p", "every kind, previewed first"),
    ("E C R S", "show as a candidate (≤ 4)"),
    ("D", "the cooldown as a candidate: decay, then end"),
    ("v", "the comparison set (README)"),
    ("1-4", "mark the one enter applies"),
    ("enter", "apply the marked candidate ▸"),
    ("escape", "clear them; cancel a race"),
    ("a", "next switch: continue ↔ restart"),
])  # fmt: skip
TUNE: Section = ("Tune the active schedule", [
    (": /", "edit the spec (same kind: keeps its origin)"),
    ("+ -", "nudge T_max, T_0, step_size, gamma"),
])  # fmt: skip
VIEW: Section = ("View", [
    ("l  L", "log-y: LR chart / loss chart"),
    ("w", "loss: whole run ↔ recent"),
    ("[ ]", "less / more smoothing"),
    ("x", "x axis: epochs, steps, wall time"),
])  # fmt: skip
RUN: Section = ("Run", [
    ("space", "pause / resume"),
    ("k", "save a checkpoint"),
    ("F", "LR range test"),
    ("f", "race the candidates against continuing"),
    ("d", "detach: training goes on"),
    ("q", "stop, flush, quit"),
])  # fmt: skip
SPECS: Section = ("Specs: KIND:k=v,... (epochs|Nsteps)", [
    ("exp", "gamma, decay_steps"),
    ("cosine", "T_max, eta_min"),
    ("step", "step_size, gamma"),
    ("any", "warmup=W, lr=X, anchor=base"),
])  # fmt: skip
READ_ONLY: Section = ("This view is read-only", [
    ("q", "close the view (a live run goes on)"),
    ("?", "this help"),
])  # fmt: skip

KEY_WIDTH = 7
COLUMN_GAP = 2
TWO_COLUMNS_FROM = 76


def sections_for(read_only: bool, axis: str) -> list[Section]:
    """The help's sections: a read-only view has only the view keys; ``axis`` is the x axis in use."""
    title, entries = VIEW
    view = (title, [(k, f"{d} (now: {axis})" if k == "x" else d) for k, d in entries])
    if read_only:
        return [view, READ_ONLY]
    return [SWITCH, TUNE, view, RUN, SPECS]


def section_lines(section: Section, width: int) -> list[Text]:
    """A section as lines of ``width``: its title, then each entry's keys and its wrapped description."""
    title, entries = section
    lines = [Text(title, style="bold")]
    for keys, what in entries:
        room = width - KEY_WIDTH - 2
        if len(keys) > KEY_WIDTH:  # a long key (a spec kind) takes its own line
            lines.append(Text(f" {keys}", style="bold #8fbcbb"))
            keys = ""
        for i, line in enumerate(wrap(what, room, indent=0)):
            head = Text(f" {keys:<{KEY_WIDTH}} " if i == 0 else " " * (KEY_WIDTH + 2), style="bold #8fbcbb")
            lines.append(head + Text(line))
    return lines


def help_pages(sections: list[Section], width: int, height: int) -> list[list[Text]]:
    """Pages of ``height`` rows at ``width`` columns: sections in columns (two when there is room), a
    section never split unless it is taller than a whole column."""
    columns = 2 if width >= TWO_COLUMNS_FROM else 1
    col_width = (width - COLUMN_GAP * (columns - 1)) // columns
    height = max(height, 3)
    stacks: list[list[Text]] = [[]]
    for section in sections:
        lines = section_lines(section, col_width)
        column = stacks[-1]
        if column and len(column) + 1 + len(lines) > height:
            stacks.append(column := [])
        if column:
            column.append(Text(""))
        column.extend(lines)
        while len(column) > height:  # a section taller than a column goes on in the next
            stacks.append(column[height:])
            del column[height:]
            column = stacks[-1]
    pages = []
    for first in range(0, len(stacks), columns):
        group = stacks[first : first + columns]
        rows = []
        for r in range(max(len(col) for col in group)):
            row = Text()
            for c, col in enumerate(group):
                cell = col[r].copy() if r < len(col) else Text("")
                if c < len(group) - 1:
                    cell.pad_right(col_width - cell.cell_len + COLUMN_GAP)
                row.append_text(cell)
            rows.append(row)
        pages.append(rows)
    return pages


class HelpScreen(Modal):
    """The keys, in columns and pages that fit the terminal (:func:`help_pages`)."""

    BINDINGS = [
        Binding("escape,question_mark,q", "close", "close"),
        Binding("right,space,pagedown,n", "page(1)", "next page"),
        Binding("left,pageup,b", "page(-1)", "previous page"),
    ]

    def __init__(self, *, read_only: bool = False, axis: str = "epochs") -> None:
        super().__init__()
        self.sections = sections_for(read_only, axis)
        self.page = 0
        self.pages: list[list[Text]] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="help-box"):
            yield Static(id="help-title")
            yield Static(id="help-text")

    def on_mount(self) -> None:
        self.call_after_refresh(self._layout)

    def on_resize(self) -> None:
        self.call_after_refresh(self._layout)

    def _layout(self) -> None:
        box = self.query_one("#help-box")
        width = max(box.content_size.width, 20)
        height = max(box.content_size.height - 1, 3)  # the title line
        self.pages = help_pages(self.sections, width, height)
        self.page = min(self.page, len(self.pages) - 1)
        self._show()

    def _show(self) -> None:
        n = len(self.pages)
        paging = f"page {self.page + 1}/{n} (→ ←) · " if n > 1 else ""
        self.query_one("#help-title", Static).update(
            Text.assemble(
                ("Keys", "bold"),
                "  ",
                (f"{paging}escape or ? closes", "dim"),
                "   ",
                ("m", "bold"),
                " every metric, in a grid",
            )
        )
        self.query_one("#help-text", Static).update(Text("\n").join(self.pages[self.page]))

    def action_page(self, direction: int) -> None:
        if self.pages:
            self.page = (self.page + direction) % len(self.pages)
            self._show()
