"""The schedule keys of the monitor: switch, candidates, the picker, edit, nudge, anchor, the range test
and the race.

A mixin of :class:`~lrwatch.app.monitor.LRWatchApp` (its bindings are declared there, with the
others): each key checks that schedule commands make sense for this run (:meth:`_can_switch`),
then sends a command to the run source or changes the candidates shown; the new preview or
candidate is drawn at once (``_redraw_now``), the run applies the command at its next step boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lrwatch.app.candidates import MAX_CANDIDATES, Candidates
from lrwatch.app.length import LengthPrompt
from lrwatch.app.panels import cycle_note
from lrwatch.app.picker import SchedulePicker
from lrwatch.app.screens import LrFindScreen, RaceScreen, SpecEditor
from lrwatch.protocol.commands import MONITOR_ONLY, EditParams, FindLr, Length, Race, RaceEnd, Switch, parse_length
from lrwatch.protocol.events import Event
from lrwatch.schedule.base import Span, fmt_value, one_minus_sig
from lrwatch.schedule.spec import KINDS, LengthUnknown, SpecError, parse_spec

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


def main_param(kind: str) -> str | None:
    """The parameter ``+`` ``-`` nudge: the kind's length (``T_max``, ``T_0``, ``decay``, ``length``) or decay
    (``gamma``, ``factor``). None for a kind without one (``constant``)."""
    return MAIN_PARAM.get(kind)


def nudged(name: str, value: float | Span, up: bool) -> float | str:
    """A parameter one nudge up or down: times ×1.25 (a time keeps its unit: ``500steps`` → ``625steps``);
    a factor in (0, 1] (``gamma``, ``factor``) moves its distance to 1 by ×1.25."""
    if isinstance(value, Span):
        scaled = value.value * NUDGE if up else value.value / NUDGE
        return str(Span(float(round(scaled)) if value.steps else float(f"{scaled:.4g}"), value.steps))
    if name in ("gamma", "factor"):
        gap = (1 - value) / NUDGE if up else (1 - value) * NUDGE  # its gap to 1 keeps 4 digits: 0.99995 → 0.99996
        return min(max(one_minus_sig(gap), 1e-3), 1.0)
    return float(f"{(value * NUDGE if up else value / NUDGE):.4g}")


class ScheduleKeys:
    """Switch, candidate, picker, edit, nudge and anchor actions (``e c r s``, ``E C R S v 1-4 enter
    escape``, ``p``, ``: /``, ``+ -``, ``a``), the range test (``F``) and the race (``f``)."""

    source: RunSource | None
    candidates: Candidates
    anchor: str

    # provided by the app
    notify: Any
    race_steps: int | None = None
    race_asked = False  # f was pressed here: a refusal is told here
    races_ended: set[int]
    lr_find_requested = False  # F was pressed here: the range test's result opens in this monitor
    push_screen: Any
    screen: Any
    _redraw_now: Any
    epochs_known: bool
    connected: bool

    def _step(self) -> int:
        return int(self.source.status().step) if self.source is not None else 0

    def _can_switch(self) -> bool:
        """Whether schedule commands make sense here; if not, say why."""
        if self.source is None:
            self.notify("No run yet: the training loop has not called lrwatch.watch().", severity="warning")
            return False
        if not self.connected:  # its timeline is not here yet: nothing to preview or switch from
            self.notify("The run is not connected yet: nothing was sent.", severity="warning")
            return False
        status = self.source.status()
        if status.read_only:
            self.notify("A read-only view of a run: nothing to switch.", severity="warning")
            return False
        if status.state == "starting":  # no timeline yet (lrwatch send RUN_DIR switch SPEC queues one)
            self.notify("The run is starting: switch once its first optimizer step is taken.", severity="warning")
            return False
        if not status.drives_lr and not status.takes_over:
            self.notify(MONITOR_ONLY, severity="warning")
            return False
        return True

    # -- the range test -------------------------------------------------------------------------
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
        """``enter`` on the result: its suggestion becomes a candidate (the active kind from that LR), drawn
        beside the active schedule; one more ``enter`` applies it, as every other change."""
        steepest = event.data.get("steepest")
        if choice == "apply" and steepest and self._can_switch():
            self._show_candidate(f"{kind}:lr={steepest:.6g}", force=True)
            self.notify("The suggestion is a candidate now: enter applies it, escape clears it.", timeout=6)

    # -- the race -------------------------------------------------------------------------------
    def action_race(self) -> None:
        """f: race the candidates shown (or the comparison set) against continuing, from the next step
        boundary, on the same batches; the results open in the monitors attached (``race_done``)."""
        if not self._can_switch():
            return
        specs = tuple(self.candidates.specs.values())
        self.race_asked = True
        self.source.submit(Race(specs, self.race_steps))
        what = f"{len(specs)} candidate{'s' if len(specs) > 1 else ''}" if specs else "the comparison set (v)"
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

    # -- switching and candidates -----------------------------------------------------------------
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

    def action_switch(self, spec: str) -> None:
        """Switch to ``spec`` at the next step boundary; asks for the run's length first when a default
        fitted to it needs it."""
        if not self._can_switch():
            return

        def switch(_timeline: Timeline) -> None:
            self.source.submit(Switch(spec, anchor=parse_spec(spec).anchor or self.anchor))
            self.candidates.clear()
            self._redraw_now()

        self._with_length(spec, switch)

    def action_candidate(self, spec: str) -> None:
        """``E C R S``, the picker's ``space``: show ``spec`` as a candidate, or hide it if shown."""
        if self._can_switch():
            self._show_candidate(spec)

    def _show_candidate(self, spec: str, force: bool = False) -> None:
        """Toggle ``spec`` (``force``: show it, replacing a shown one of its kind, even when four are shown);
        asks for the run's length first when a default fitted to it needs it."""

        def show(timeline: Timeline) -> None:
            step = self._step()
            if self.candidates.step != step and self.candidates:
                self.candidates.refresh(timeline, step, self.anchor)
            kind = parse_spec(spec).kind
            if force and (kind in self.candidates or len(self.candidates) >= MAX_CANDIDATES):
                self.candidates.remove(kind if kind in self.candidates else self.candidates.kinds()[0])
            try:
                why = self.candidates.toggle(spec, timeline, step, self.anchor)
            except SpecError as exc:
                why = str(exc)
            if why:
                self.notify(why, severity="warning")
            self._redraw_now()

        self._with_length(spec, show)

    def action_candidate_all(self) -> None:
        """v: the comparison set as candidates (v again hides it)."""
        if self._can_switch():
            shown_before = bool(self.candidates)

            def show(timeline: Timeline) -> None:
                if not self.candidates.show_comparison(timeline, self._step(), self.anchor):
                    why = "candidates cleared" if shown_before else "nothing to compare: every kind is continuing"
                    self.notify(why, timeout=3)
                self._redraw_now()

            self._with_length("cosine", show)  # the set's fitted kinds need the run's length

    def action_mark(self, slot: int) -> None:
        """1–4: the candidate ``enter`` applies."""
        if self.candidates.mark(slot) is not None:
            self._redraw_now()

    def action_apply_candidate(self) -> None:
        """enter: switch to the marked candidate (the last shown, or the one picked with 1–4)."""
        kind = self.candidates.marked
        if kind is not None:  # a cooldown as shown: its fitted length is a quarter of the steps done then
            self.action_switch(self.candidates.resolved(kind) if kind == "cooldown" else self.candidates.specs[kind])

    def action_clear_candidates(self) -> None:
        if self.race_running():
            self.action_cancel_race()
            return
        self.candidates.clear()
        self._redraw_now()

    def refresh_candidates(self, step: int) -> None:
        """Re-fit the candidates at ``step`` (the run moved on)."""
        if self.source is not None:
            self.candidates.refresh(self.source.timeline, step, self.anchor)

    # -- the picker -------------------------------------------------------------------------------
    def action_pick(self) -> None:
        """p: every kind, each previewed from now with its fitted defaults; enter switches, space shows it
        as a candidate, : edits its spec first."""
        if not self._can_switch():
            return
        step = self._step()
        timeline = self.source.timeline
        current = timeline.segment_at(step).schedule.kind
        self.push_screen(
            SchedulePicker(
                list(KINDS),
                branch=lambda kind: self.source.timeline.switch(self._step(), kind, self.anchor),
                chart=self.picker_chart,
                note=lambda branch: cycle_note(branch, self._step(), self.epochs_known),
                is_candidate=lambda kind: kind in self.candidates,
                toggle=lambda kind: self._show_candidate(kind),
                keys={kind: key for key, kind in KIND_KEYS.items()},
                start=current,
            ),
            self._after_pick,
        )

    def _after_pick(self, choice: tuple[str, str] | None) -> None:
        if choice is None:
            return
        what, spec = choice
        if what == "switch":
            self.action_switch(spec)
        elif what == "edit":
            self._edit(spec)

    # -- edit, nudge, anchor --------------------------------------------------------------------
    def action_edit_spec(self) -> None:
        if self._can_switch():
            why = self.source.timeline.edit_refusal(self._step())
            if why is not None:  # the script's own LR, no spec: what is typed is a switch
                self.notify(why, severity="warning", timeout=6)
            self._edit("" if why else str(self.source.timeline.segment_at(self._step()).spec))

    def _edit(self, initial: str) -> None:
        seg = self.source.timeline.segment_at(self._step())
        scripted = self.source.timeline.edit_refusal(self._step()) is not None  # no spec to edit: a switch

        def timeline_for(text: str) -> tuple[Timeline, int]:
            """What the spec typed would make of the run: an edit (same kind) or a switch, and from where."""
            spec = parse_spec(text)
            timeline, step = self.source.timeline, self._step()
            if spec.kind == seg.schedule.kind and spec.anchor is None and spec.lr is None and not scripted:
                return timeline.edit(step, **spec.given()), seg.origin_step
            return timeline.switch(step, spec, spec.anchor or self.anchor), step

        def note(text: str) -> str | None:
            try:
                timeline, start = timeline_for(text)
            except (SpecError, ValueError):
                return None
            return cycle_note(timeline, start, self.epochs_known)

        def done(text: str | None) -> None:
            if text is None:
                return
            spec = parse_spec(text)
            same = spec.kind == seg.schedule.kind and not scripted
            if same and spec.anchor is None and spec.lr is None:  # lr=: a new start
                values = tuple((k, v if type(v) in (int, float) else fmt_value(v)) for k, v in spec.params)
                self.source.submit(EditParams(values))  # JSON: numbers, or spec notation (5000steps, 30/60)
                self.candidates.clear()
                self._redraw_now()
            else:
                self.action_switch(text)  # asks for the run's length first if a fit needs it

        self.push_screen(SpecEditor(initial, note=note), done)

    def action_nudge(self, up: bool) -> None:
        if not self._can_switch():
            return
        why = self.source.timeline.edit_refusal(self._step())
        if why is not None:
            self.notify(why, severity="warning", timeout=6)
            return
        seg = self.source.timeline.segment_at(self._step())
        name = main_param(seg.schedule.kind)
        if name is None or name not in seg.schedule.params():
            self.notify(f"{seg.schedule.kind} has no parameter to nudge: ':' edits its spec", severity="warning")
            return
        value = nudged(name, seg.schedule.params()[name], up)
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
            self.candidates.refresh(self.source.timeline, self._step(), self.anchor)
        self._redraw_now()
