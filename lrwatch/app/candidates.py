"""The candidate schedules the monitor shows beside the active one: up to four at once, each in its slot's
colour, each a spec switched in at the current step (re-fitted as the run moves on). No Textual here.

``E`` ``C`` ``R`` ``S`` and the picker's ``space`` toggle one; ``v`` shows the comparison set
(:func:`~lrwatch.schedule.choices.comparison_specs`); ``escape`` clears them. The one marked (the last
shown, or picked with ``1``–``4``) is the one ``enter`` applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lrwatch.schedule.choices import comparison_specs
from lrwatch.schedule.spec import SpecError, parse_spec
from lrwatch.schedule.timeline import Timeline

MAX_CANDIDATES = 4


@dataclass
class Candidates:
    """Shown candidates by kind (one per kind), in the order they were shown: ``specs`` as asked
    (``cosine``, ``cosine:lr=0.003``), ``timelines`` as resolved at ``step``."""

    specs: dict[str, str] = field(default_factory=dict)
    timelines: dict[str, Timeline] = field(default_factory=dict)
    marked: str | None = None
    step: int = -1

    def __len__(self) -> int:
        return len(self.specs)

    def __bool__(self) -> bool:
        return bool(self.specs)

    def __contains__(self, kind: object) -> bool:
        return kind in self.specs

    def kinds(self) -> list[str]:
        return list(self.specs)

    def toggle(self, spec: str, timeline: Timeline, step: int, anchor: str) -> str | None:
        """Show ``spec`` (marked), or hide it if its kind is shown with the same spec; a shown kind with
        another spec is replaced. Returns why nothing changed (four are shown already), else None."""
        kind = parse_spec(spec).kind
        if self.specs.get(kind) == spec:
            self.remove(kind)
            return None
        if kind not in self.specs and len(self.specs) >= MAX_CANDIDATES:
            return f"at most {MAX_CANDIDATES} candidates at once: press a shown one's key to hide it, or escape"
        self.specs[kind] = spec
        self.timelines[kind] = timeline.switch(step, spec, anchor)
        self.marked, self.step = kind, step
        return None

    def remove(self, kind: str) -> None:
        self.specs.pop(kind, None)
        self.timelines.pop(kind, None)
        if self.marked == kind:
            self.marked = next(reversed(self.specs), None) if self.specs else None

    def clear(self) -> None:
        self.specs.clear()
        self.timelines.clear()
        self.marked = None

    def show_comparison(self, timeline: Timeline, step: int, anchor: str) -> bool:
        """``v``: the comparison set, or none if exactly that set is shown (``v`` again hides it).
        Returns whether candidates are shown now."""
        kinds = comparison_specs(timeline, step, anchor)
        if list(self.specs) == kinds and all(self.specs[k] == k for k in kinds):
            self.clear()
            return False
        self.clear()
        for kind in kinds:
            self.toggle(kind, timeline, step, anchor)
        self.marked = kinds[0] if kinds else None
        return bool(kinds)

    def refresh(self, timeline: Timeline, step: int, anchor: str) -> None:
        """Re-fit every candidate at ``step`` (the run moved on, or the anchor changed)."""
        for kind, spec in self.specs.items():
            try:
                self.timelines[kind] = timeline.switch(step, spec, anchor)
            except SpecError:  # a fit to a length the run has not taken yet: kept as shown until it has
                pass
        self.step = step

    def mark(self, slot: int) -> str | None:
        """Mark the candidate in ``slot`` (0-based) for ``enter``; its kind, or None if there is none."""
        kinds = list(self.specs)
        if 0 <= slot < len(kinds):
            self.marked = kinds[slot]
            return self.marked
        return None

    def resolved(self, kind: str) -> str:
        """The candidate's spec as it would start now (fitted defaults filled in; ``lr=`` kept)."""
        spec = self.timelines[kind].segments[-1].spec
        return str(replace(spec, lr=parse_spec(self.specs[kind]).lr))
