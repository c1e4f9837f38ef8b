"""The schedule keys of the monitor: switch, candidates, edit, nudge, anchor.

A mixin of :class:`~lrwatch.app.monitor.LRWatchApp` (its bindings are declared there, with the
others): each key checks that schedule commands make sense for this run (:meth:`_can_switch`),
then sends a command to the run source or changes the candidates shown; the new preview or
candidate is drawn at once (``_redraw_now``), the run applies the command at its next step boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lrwatch.app.length import LengthPrompt
from lrwatch.app.screens import LrFindScreen, RaceScreen, SpecEditor
from lrwatch.protocol.commands import MONITOR_ONLY, EditParams, FindLr, Length, Race, RaceEnd, Switch, parse_length
from lrwatch.protocol.events import Event
from lrwatch.schedule.base import Span, fmt_value
from lrwatch.schedule.spec import CLASSIC, LengthUnknown, SpecError, parse_spec

if TYPE_CHECKING:
    from lrwatch.protocol.events import RunSource
    from lrwatch.schedule.timeline import Timeline

KIND_KEYS = {"e": "exp", "c": "cosine", "r": "cosine-restarts", "s": "step"}
MAIN_PARAM = {
    "exp": "gamma", "cosine": "T_max", "cosine-restarts": "T_0", "step": "step_size", "multistep": "gamma",
    "linear": "total_iters", "poly": "total_iters", "onecycle": "total_steps", "inverse-sqrt": "timescale",
    "wsd": "decay", "cooldown": "length", "plateau": "factor",
}  # fmt: skip
NUDGE = 1.25
RACE_DECIDED = -2  # the race table closed because the race ended elsewhere: nothing to send


def nudged(kind: str, value: float | Span, up: bool) -> float | str:
    """The main parameter one nudge up or down: times ×1.25 (a time keeps its unit); gamma and factor move
    their distance to 1 by ×1.25."""
    if isinstance(value, Span):
        scaled = value.value * NUDGE if up else value.value / NUDGE
        return str(Span(float(round(scaled)) if value.steps else float(f"{scaled:.4g}"), value.steps))
    if MAIN_PARAM[kind] in ("gamma", "factor"):
        gap = (1 - value) / NUDGE if up else (1 - value) * NUDGE
        return float(f"{min(max(1 - gap, 1e-3), 1.0):.4g}")
    return float(f"{(value * NUDGE if up else value / NUDGE):.4g}")


class ScheduleKeys:
    """Switch, candidate, edit, nudge and anchor actions (``e c r s``, ``E C R S v enter escape``,
    ``: /``, ``+ -``, ``a``)."""

    source: RunSource | None
    candidates: dict[str, Timeline]
    anchor: str
    _candidate_step: int

    # provided by the app
    notify: Any
    race_steps: int | None = None
    race_asked = False  # f was pressed here: a refusal is told here
    races_ended: set[int]
    lr_find_requested = False  # F was pressed here: the range test's result opens in this monitor
    push_screen: Any
    screen: Any
    _redraw_now: Any

    def _step(self) -> int:
        return int(self.source.status().step) if self.source is not None else 0

    def _can_switch(self) -> bool:
        """Whether schedule commands make sense here; if not, say why."""
        if self.source is None:
            self.notify("No run yet: the training loop has not called lrwatch.watch().", severity="warning")
            return False
        status = self.source.status()
        if status.read_only:
            self.notify("A read-only view of a run: nothing to switch.", severity="warning")
            return False
        if not status.drives_lr and not status.takes_over:
            self.notify(MONITOR_ONLY, severity="warning")
            return False
        return True

    def action_find_lr(self) -> None:
        """F: the LR range test from the run's current state, at the next step boundary; the run goes on
        from where it was. Its result opens here (``lr_find_done``)."""
        if not self._can_switch():
            return
        self.lr_find_requested = True
        self.source.submit(FindLr())
        self.notify("LR range test: running at the next step boundary …", timeout=4)

    def lr_find_done(self, event: Event) -> None:
        """A run event, for the range test this monitor asked for: its result, or why there is none."""
        if not self.lr_find_requested:
            return
        if event.kind == "rejected" and event.data.get("command", {}).get("command") == "find-lr":
            self.lr_find_requested = False
            self.notify(str(event.data.get("reason")), severity="warning", timeout=8)
        elif event.kind == "lr_find":
            self.lr_find_requested = False
            kind = self.source.timeline.segment_at(self._step()).schedule.kind
            self.push_screen(LrFindScreen(event.data, kind), lambda choice: self._apply_lr_find(choice, event, kind))

    def _apply_lr_find(self, choice: str | None, event: Event, kind: str) -> None:
        steepest = event.data.get("steepest")
        if choice == "apply" and steepest and self._can_switch():
            self.source.submit(Switch(f"{kind}:lr={steepest:.6g}", anchor="continue"))
            self._redraw_now()

    def action_race(self) -> None:
        """f: race the candidates shown (or every kind, fitted) against continuing, from the next step
        boundary, on the same batches; the results open in the monitors attached (``race_done``)."""
        if not self._can_switch():
            return
        specs = tuple(str(c.segments[-1].spec) for c in self.candidates.values())
        self.race_asked = True
        self.source.submit(Race(specs, self.race_steps))
        what = f"{len(specs)} candidate{'s' if len(specs) > 1 else ''}" if specs else "every kind"
        self.notify(f"Race: continuing against {what}, from the next step boundary (escape cancels) …", timeout=4)

    def race_running(self) -> bool:
        """A race is training its candidates (escape cancels it rather than clearing candidates)."""
        race = self.source.status().race if self.source is not None else None
        return bool(race) and race.get("phase") == "training"

    def action_cancel_race(self) -> None:
        self.source.submit(RaceEnd(-1))
        self.notify("Race cancelled: the snapshot is restored, the run goes on as before.", timeout=4)

    def race_done(self, event: Event) -> None:
        """A race's results, when the run waits for a monitor's choice: the table; ``race_end`` closes it
        (another monitor chose, or the run did)."""
        if event.kind == "rejected" and event.data.get("command", {}).get("command") == "race" and self.race_asked:
            self.race_asked = False
            self.notify(str(event.data.get("reason")), severity="warning", timeout=8)  # f: what is missing
        elif event.kind == "race_start":
            self.race_asked = False
        elif event.kind == "race" and event.data.get("awaiting") and event.data.get("race") not in self.races_ended:
            if self.source.status().read_only:
                return
            self.push_screen(RaceScreen(event.data), self._after_race)
        elif event.kind == "race_end" and isinstance(self.screen, RaceScreen):
            self.screen.close(RACE_DECIDED)

    def _after_race(self, choice: int | None) -> None:
        if choice != RACE_DECIDED and self.source is not None and not self.source.status().read_only:
            self.source.submit(RaceEnd(-1 if choice is None else int(choice)))

    def _with_length(self, spec: str, then: Callable[[Timeline], None]) -> None:
        """``then(timeline)`` now; or, when ``spec`` fits a default to the run's unknown length, after the
        length prompt (its answer is sent to the run first, as a ``Length``)."""
        timeline = self.source.timeline
        try:
            if timeline.total_steps is None:
                timeline.switch(self._step(), spec, self.anchor)
        except LengthUnknown as exc:
            why = f"{exc.kind}'s {exc.key}"

            def done(text: str | None) -> None:
                if text is not None and self._can_switch():
                    self.source.submit(Length(text))
                    then(timeline.with_length(round(parse_length(text).to_steps(timeline.steps_per_epoch))))

            self.push_screen(LengthPrompt(why, self._step(), timeline.steps_per_epoch), done)
            return
        except SpecError:
            pass  # the run refuses it, and says why
        then(timeline)

    def action_switch(self, kind: str) -> None:
        """Switch to ``kind`` (or a full spec) at the next step boundary; asks for the run's length first when
        a default fitted to it needs it."""
        if not self._can_switch():
            return

        def switch(_timeline: Timeline) -> None:
            self.source.submit(Switch(kind, anchor=self.anchor))
            self.candidates.clear()
            self._redraw_now()

        self._with_length(kind, switch)

    def action_candidate(self, kind: str) -> None:
        if not self._can_switch():
            return
        if set(self.candidates) == {kind}:
            self.candidates.clear()
            self._redraw_now()
            return

        def show(timeline: Timeline) -> None:
            try:
                self.candidates = {kind: timeline.switch(self._step(), kind, self.anchor)}
            except SpecError as exc:
                self.notify(str(exc), severity="warning")
                return
            self._candidate_step = self._step()
            self._redraw_now()

        self._with_length(kind, show)

    def action_candidate_all(self) -> None:
        if not self._can_switch():
            return
        if len(self.candidates) == len(CLASSIC):
            self.candidates.clear()
        else:
            self._refresh_candidates(self._step(), list(CLASSIC))
        self._redraw_now()

    def _refresh_candidates(self, step: int, kinds: list[str] | None = None) -> None:
        timeline = self.source.timeline
        shown = {}
        for kind in kinds or list(self.candidates):
            try:
                shown[kind] = timeline.switch(step, kind, self.anchor)
            except SpecError:  # a fit that needs the run's length: shown once it has one
                if kind in self.candidates:
                    shown[kind] = self.candidates[kind]
        self.candidates = shown
        self._candidate_step = step

    def action_apply_candidate(self) -> None:
        if len(self.candidates) == 1:
            kind, shown = next(iter(self.candidates.items()))
            # A cooldown is applied as shown: its fitted length is a quarter of the steps done when it was shown
            self.action_switch(str(shown.segments[-1].spec) if kind == "cooldown" else kind)
        elif self.candidates:
            self.notify("Several candidates shown: press e, c, r or s to switch to one.")

    def action_clear_candidates(self) -> None:
        if self.race_running():
            self.action_cancel_race()
            return
        self.candidates.clear()
        self._redraw_now()

    def action_edit_spec(self) -> None:
        if not self._can_switch():
            return
        seg = self.source.timeline.segment_at(self._step())

        def done(text: str | None) -> None:
            if text is None:
                return
            spec = parse_spec(text)
            if spec.kind == seg.schedule.kind and spec.anchor is None and spec.lr is None:  # lr=: a new start
                values = tuple((k, v if type(v) in (int, float) else fmt_value(v)) for k, v in spec.params)
                self.source.submit(EditParams(values))  # JSON: numbers, or spec notation (5000steps, 30/60)
                self._redraw_now()
            else:

                def switch(_timeline: Timeline) -> None:
                    self.source.submit(Switch(text, anchor=spec.anchor or self.anchor))
                    self._redraw_now()

                self._with_length(text, switch)

        self.push_screen(SpecEditor(str(seg.spec)), done)

    def action_nudge(self, up: bool) -> None:
        if not self._can_switch():
            return
        seg = self.source.timeline.segment_at(self._step())
        name = MAIN_PARAM.get(seg.schedule.kind)
        if name is None:
            self.notify(f"{seg.schedule.kind} has no parameter to nudge: : edits its spec", severity="warning")
            return
        value = nudged(seg.schedule.kind, seg.schedule.params()[name], up)
        try:
            seg.spec.with_params(**{name: value})
        except SpecError as exc:
            self.notify(str(exc), severity="warning")
            return
        self.source.submit(EditParams(((name, value),)))
        self._redraw_now()

    def action_toggle_anchor(self) -> None:
        self.anchor = "base" if self.anchor == "continue" else "continue"

    def watch_anchor(self) -> None:
        if self.candidates:
            self._refresh_candidates(self._step())
        self._redraw_now()
