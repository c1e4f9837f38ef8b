"""``p``: every schedule kind, each previewed from the current step before it is applied.

Built over :data:`lrwatch.schedule.spec.KINDS` and its fitted defaults (``Timeline.switch``), so a kind
added there shows here with no change. The list on the left (↑ ↓), on the right the LR chart with the
highlighted kind drawn from now beside the run's own plan, below it the spec it resolves to, its PyTorch
line and, when its cycle ends before the run, what follows. ``enter`` switches to it, ``space`` shows it
as a candidate on the main screen (✓; up to four), ``:`` opens the editor with its spec, ``escape`` closes.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from lrwatch.app.screens import Modal
from lrwatch.app.textfit import lines_of
from lrwatch.app.widgets import Chart
from lrwatch.charts.plot import ChartSpec
from lrwatch.schedule.timeline import Timeline

PICKER_TITLE = "[b]Schedules[/b] from now  [dim]enter switch · space candidate · : edit · esc close[/dim]"


class SchedulePicker(Modal):
    """Every kind with its preview; dismisses with ``("switch" | "edit", spec)`` or None."""

    BINDINGS = [
        Binding("space", "candidate", "candidate"),
        Binding("colon,slash", "edit", "edit"),
        Binding("escape,p", "close", "close"),
    ]

    def __init__(
        self,
        kinds: list[str],
        *,
        branch: Callable[[str], Timeline],
        chart: Callable[[dict[str, Timeline], int, int], ChartSpec],
        note: Callable[[Timeline], str | None],
        is_candidate: Callable[[str], bool],
        toggle: Callable[[str], None],
        keys: dict[str, str] | None = None,
        start: str | None = None,
    ) -> None:
        """``branch(kind)``: the run with ``kind`` switched in now; ``chart(candidates, w, h)``: the LR chart
        with those drawn; ``note(branch)``: what follows its cycle; ``toggle(kind)``: show/hide it as a
        candidate; ``keys``: a kind's single key, shown beside it."""
        super().__init__()
        self.kinds, self.branch, self.chart, self.note = kinds, branch, chart, note
        self.is_candidate, self.toggle, self.keys = is_candidate, toggle, keys or {}
        self.start = start if start in kinds else kinds[0]
        self._branches: dict[str, Timeline] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="picker-box"):
            yield Static(PICKER_TITLE, id="picker-title")
            with Horizontal(id="picker-main"):
                yield OptionList(*[Option(self._prompt(kind), id=kind) for kind in self.kinds], id="picker-list")
                yield Chart(id="picker-chart")
            yield Static(id="picker-info")

    def _prompt(self, kind: str) -> Text:
        mark = ("✓ ", "bold #e0a000") if self.is_candidate(kind) else ("  ", "")
        key = self.keys.get(kind)
        return Text.assemble(mark, kind, (f"  {key}", "dim") if key else "")

    def on_mount(self) -> None:
        options = self.query_one("#picker-list", OptionList)
        options.highlighted = self.kinds.index(self.start)
        options.focus()
        self.call_after_refresh(self._show)

    def on_resize(self) -> None:
        self.call_after_refresh(self._show)

    @property
    def kind(self) -> str:
        index = self.query_one("#picker-list", OptionList).highlighted
        return self.kinds[index if index is not None else 0]

    def _branch(self, kind: str) -> Timeline:
        if kind not in self._branches:
            self._branches[kind] = self.branch(kind)
        return self._branches[kind]

    def on_option_list_option_highlighted(self, _event: OptionList.OptionHighlighted) -> None:
        self._show()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()  # enter on the list: switch to the highlighted kind
        self.close(("switch", self.kind))

    def _show(self) -> None:
        """The highlighted kind: its preview in the chart, its spec, PyTorch line and cycle note below."""
        if not self.is_mounted:
            return
        kind = self.kind
        branch = self._branch(kind)
        self.query_one("#picker-chart", Chart).draw(lambda w, h: self.chart({kind: branch}, w, h))
        seg = branch.segments[-1]
        info = self.query_one("#picker-info", Static)
        width = max(info.content_size.width, 20)
        items = [Text(str(seg.spec), style="bold"), Text(seg.schedule.torch_line(), style="#8fbcbb")]
        note = self.note(branch)
        items.append(Text(f"⚠ {note}", style="yellow") if note else Text(f"from lr {seg.base_lr:.4g}", style="dim"))
        info.update(Text("\n").join(lines_of(items, width)))

    def action_candidate(self) -> None:
        kind = self.kind
        self.toggle(kind)
        options = self.query_one("#picker-list", OptionList)
        options.replace_option_prompt_at_index(self.kinds.index(kind), self._prompt(kind))

    def action_edit(self) -> None:
        self.close(("edit", str(self._branch(self.kind).segments[-1].spec)))
