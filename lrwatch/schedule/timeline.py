"""A run's learning rate as a timeline of schedule segments.

A segment applies from its ``start_step`` until the next segment starts. Its schedule's clock ``t`` counts
optimizer steps from ``origin_step``:

- per-batch updates (default): ``t = step − origin_step`` (a key in epochs is ``epochs × steps_per_epoch``
  steps, so this is the fractional epoch PyTorch's ``CosineAnnealingWarmRestarts.step(epoch + i / iters)`` uses);
- per-epoch updates: ``t = (⌊step / K⌋ − ⌊origin_step / K⌋) · K``, so the LR changes only at epoch
  boundaries, as in a loop that calls ``scheduler.step()`` once per epoch.

A switch at step ``k`` starts a segment with ``origin_step = k`` whose base LR is the LR in
force at ``k − 1`` (``anchor=continue``, no jump) or the run's initial LR (``anchor=base``,
a warm restart). An edit of the active schedule's parameters keeps its origin and base LR.
Defaults fitted to "the rest of the run" need its length (``total_steps``): without it a spec that leaves
one out is refused (:class:`~lrwatch.schedule.base.LengthUnknown`), never guessed. A ``cooldown`` sets the
run's length: it ends at the cooldown's last step (:attr:`Timeline.ends_at`).
The run applies exactly :meth:`Timeline.lrs`: the preview and the real thing are one code path.
Until a take-over, a ``lrwatch run`` script's first segment is its own schedule (:attr:`Timeline.script`,
:mod:`lrwatch.schedule.script`): a mapped spec on the scheduler's clock, observed LRs, or set by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lrwatch.schedule.base import Fit, SpecError
from lrwatch.schedule.script import ScriptSchedule, quantized
from lrwatch.schedule.spec import Schedule, ScheduleSpec, parse_spec, resolve, spec_of


@dataclass(frozen=True)
class Segment:
    start_step: int
    origin_step: int
    base_lr: float
    schedule: Schedule
    anchor: str = "continue"

    @property
    def spec(self) -> ScheduleSpec:
        return spec_of(self.schedule)

    @property
    def end_step(self) -> int | None:
        """A cooldown's end: the first step after its last (the run ends there); ``None`` for other kinds."""
        length = self.schedule.length_steps
        return None if length is None else self.origin_step + math.ceil(length - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_step": self.start_step,
            "origin_step": self.origin_step,
            "base_lr": self.base_lr,
            "spec": str(self.spec),
            "anchor": self.anchor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], steps_per_epoch: int = 1) -> Segment:
        origin = int(data["origin_step"])
        return cls(
            int(data["start_step"]),
            origin,
            float(data["base_lr"]),
            resolve(parse_spec(data["spec"]), Fit(steps_per_epoch=steps_per_epoch, start_step=origin)),
            data.get("anchor", "continue"),
        )


def check_lr(lr: float, what: str = "lr") -> float:
    """An LR: a finite number >= 0 (0 is a warmup's first step, or a finished decay)."""
    if not (lr >= 0 and np.isfinite(lr)):
        raise SpecError(f"{what} must be a finite number >= 0 (got {lr})")
    return float(lr)


@dataclass(frozen=True)
class Timeline:
    """Immutable; :meth:`switch`, :meth:`edit` and :meth:`with_length` return a new timeline.

    ``total_steps``: the run's length (``None``: unknown); ``steps_only``: the run has no epochs, so defaults
    fitted to it are written in steps; ``script``: the first segment is a script's own schedule (until it
    is replaced, which drops it)."""

    initial_lr: float
    steps_per_epoch: int
    segments: tuple[Segment, ...]
    total_steps: int | None = None
    per_epoch: bool = False
    steps_only: bool = False
    script: ScriptSchedule | None = None

    @classmethod
    def start(
        cls,
        spec: ScheduleSpec | str,
        *,
        lr: float,
        steps_per_epoch: int,
        total_steps: int | None = None,
        per_epoch: bool = False,
        steps_only: bool = False,
    ) -> Timeline:
        check_lr(lr)
        if steps_per_epoch < 1:
            raise SpecError(f"steps per epoch must be >= 1 (got {steps_per_epoch})")
        if isinstance(spec, str):
            spec = parse_spec(spec)
        lr = spec.lr if spec.lr is not None else lr  # lr=: the segment's starting LR, given in the spec
        empty = cls(lr, int(steps_per_epoch), (), total_steps, per_epoch, steps_only)
        return empty._with_segment(0, spec, origin_step=0, base_lr=lr)

    @classmethod
    def of_script(
        cls,
        script: ScriptSchedule,
        spec: ScheduleSpec | str | None,
        *,
        lr: float,
        origin_step: int = 0,
        steps_per_epoch: int,
        total_steps: int | None = None,
        steps_only: bool = False,
        initial_lr: float | None = None,
    ) -> Timeline:
        """A script's own schedule as the first segment: ``spec`` (mapped; its times all given, its origin the
        scheduler's step 0 at ``origin_step``, which may be before the run's step 0 on a resume), or a
        ``constant`` placeholder at ``lr`` (observed, by hand). ``initial_lr``: the run's (what ``anchor=base``
        restarts from, and what each param group's LR is relative to), if not the segment's."""
        placeholder = spec is None or script.how != "mapped"
        start = cls.start("constant" if placeholder else spec, lr=lr, steps_per_epoch=steps_per_epoch,
                          total_steps=total_steps, steps_only=steps_only)  # fmt: skip
        first = replace(start.segments[0], origin_step=int(origin_step))
        initial = start.initial_lr if initial_lr is None else check_lr(initial_lr)
        return replace(start, initial_lr=initial, segments=(first,), script=script)

    # -- evaluation -------------------------------------------------------------------------
    def epoch_at(self, steps: np.ndarray | int) -> np.ndarray:
        """Fractional epoch position of each step: ``step / steps_per_epoch``."""
        return np.asarray(steps, dtype=np.float64) / self.steps_per_epoch

    def _local_t(self, steps: np.ndarray, origin: int) -> np.ndarray:
        """The schedule's clock: steps since ``origin`` (per-epoch: whole epochs of them)."""
        if self.per_epoch:
            k = self.steps_per_epoch
            return ((steps // k - origin // k) * k).astype(np.float64)
        return (steps - origin).astype(np.float64)

    def lrs(self, steps: np.ndarray | range | list[int]) -> np.ndarray:
        """The LR applied at each (integer) step, vectorised."""
        steps = np.asarray(steps, dtype=np.int64)
        out = np.empty(steps.shape, dtype=np.float64)
        starts = np.array([s.start_step for s in self.segments], dtype=np.int64)
        which = np.searchsorted(starts, steps, side="right") - 1
        for i, seg in enumerate(self.segments):
            mask = which == i
            if mask.any():
                out[mask] = self._segment_lrs(i, seg, steps[mask])
        return out

    def _segment_lrs(self, i: int, seg: Segment, steps: np.ndarray) -> np.ndarray:
        script = self.script
        t = self._local_t(steps, seg.origin_step)
        if script is not None and seg.origin_step == self.segments[0].origin_step:  # the script's (or its edit)
            if script.how == "mapped":
                t = quantized(t, script.every)  # the scheduler's clock: whole scheduler steps
            elif i == 0 and script.values:
                return script.lrs(steps)
        return seg.schedule.lr(seg.base_lr, t)

    def lr_at(self, step: int) -> float:
        return float(self.lrs(np.array([step]))[0])

    def preview(self, from_step: int, to_step: int | None = None) -> np.ndarray:
        """LRs for steps ``from_step .. to_step − 1`` (default: to the planned end of the run)."""
        end = self.total_steps if to_step is None else to_step
        if end is None:
            raise ValueError("preview needs to_step when the run's length is unknown")
        return self.lrs(np.arange(from_step, max(from_step, end)))

    def segment_at(self, step: int) -> Segment:
        active = self.segments[0]
        for seg in self.segments:
            if seg.start_step <= step:
                active = seg
        return active

    @property
    def ends_at(self) -> int | None:
        """The step at which the run ends by its schedule (a cooldown's end), or ``None``."""
        return self.segments[-1].end_step if self.segments else None

    def remaining_steps(self, step: int) -> float | None:
        """Steps from ``step`` to the end of the run (at least 1), or ``None`` when its length is unknown."""
        if self.total_steps is None:
            return None
        return float(max(self.total_steps - step, 1))

    def fit_at(self, origin_step: int) -> Fit:
        """What a default fitted at ``origin_step`` knows of the run."""
        return Fit(
            steps_per_epoch=self.steps_per_epoch,
            start_step=origin_step,
            remaining_steps=self.remaining_steps(origin_step),
            in_steps=self.steps_only,
        )

    # -- changes ----------------------------------------------------------------------------
    def _with_segment(self, step: int, spec: ScheduleSpec, *, origin_step: int, base_lr: float) -> Timeline:
        schedule = resolve(spec, self.fit_at(origin_step))
        return self._append(Segment(step, origin_step, base_lr, schedule, spec.anchor or "continue"))

    def _append(self, seg: Segment) -> Timeline:
        kept = tuple(s for s in self.segments if s.start_step < seg.start_step)
        total = seg.end_step if seg.end_step is not None else self.total_steps  # a cooldown ends the run
        script = self.script if kept else None  # the script's segment replaced (a take-over at its start)
        return replace(self, segments=(*kept, seg), total_steps=total, script=script)

    def with_length(self, total_steps: int | None) -> Timeline:
        """The same schedule in a run of ``total_steps`` steps (the preview, ETA and later fits follow)."""
        return replace(self, total_steps=None if total_steps is None else int(total_steps))

    def switch(self, step: int, spec: ScheduleSpec | str, anchor: str | None = None) -> Timeline:
        """Start ``spec`` at ``step``; segments at or after ``step`` are replaced.

        ``anchor`` (or the spec's own ``anchor=``) picks the base LR: ``continue`` → the LR
        applied at ``step − 1``; ``base`` → the run's initial LR.
        """
        if isinstance(spec, str):
            spec = parse_spec(spec)
        if anchor is not None:
            spec = replace(spec, anchor=anchor)
        if spec.lr is not None:
            base_lr = spec.lr  # lr=: the starting LR given outright
        elif spec.anchor == "base" or step == 0:
            base_lr = self.initial_lr
        else:
            base_lr = self.lr_at(step - 1)
        return self._with_segment(step, spec, origin_step=step, base_lr=base_lr)

    def take_over(self, step: int, spec: ScheduleSpec | str, lr: float) -> Timeline:
        """Start ``spec`` at ``step`` from ``lr``: the LR a run's own scheduler had set when lrwatch took
        the LR over (``lrwatch run`` on a script that never calls ``watch()``). Earlier segments stay, unused."""
        if isinstance(spec, str):
            spec = parse_spec(spec)
        check_lr(lr, f"the LR to take over from ({lr})")
        return self._with_segment(step, spec, origin_step=step, base_lr=float(lr))

    def edit(self, step: int, **params: Any) -> Timeline:
        """Change parameters of the schedule active at ``step``, keeping its origin and base LR. A value is a
        number or spec notation (``T_max="5000steps"``)."""
        active = self.segment_at(step)
        new_spec = replace(active.spec.with_params(**params), anchor=active.anchor)
        schedule = resolve(new_spec, self.fit_at(active.origin_step))
        return self._append(Segment(step, active.origin_step, active.base_lr, schedule, active.anchor))

    def scale(self, step: int, factor: float) -> Timeline:
        """Multiply the LR from ``step`` on by ``factor``, keeping the active schedule's shape (a rollback)."""
        active = self.segment_at(step)
        return self._append(Segment(step, active.origin_step, active.base_lr * factor, active.schedule, active.anchor))

    def for_group(self, initial_lr: float) -> Timeline:
        """This timeline as a param group whose initial LR is ``initial_lr`` follows it, by each schedule's
        twin's own rule (:attr:`Schedule.group_rule`): ``own`` (PyTorch) from the group's own LR, absolute
        values such as ``eta_min`` shared; ``ratio`` (transformers' ``LambdaLR``) one factor for every group,
        so absolute values scale with the group's LR; ``same`` (``OneCycleLR``'s one ``max_lr``) the run's LR.
        Every segment's base LR is derived as the run's was: a switch starts from this group's own LR before it
        (``continue``) or from ``initial_lr`` (``base``); an edit keeps the base, a scale multiplies it, by the
        same factor as the run's segment did."""
        if initial_lr == self.initial_lr:
            return self
        ours = replace(self, initial_lr=initial_lr, segments=())
        previous: Segment | None = None
        for seg in self.segments:
            if previous is None or seg.origin_step == seg.start_step:  # a start or a switch
                first = previous is None or seg.anchor == "base" or seg.start_step == 0
                run_rule = self.initial_lr if first else self.lr_at(seg.start_step - 1)
                group_rule = initial_lr if first else ours.lr_at(seg.start_step - 1)
            else:  # an edit or a scale of the segment in force
                run_rule, group_rule = previous.base_lr, ours.segments[-1].base_lr
            factor = seg.base_lr / run_rule if seg.base_lr != run_rule else 1.0
            base, schedule = group_rule * factor, seg.schedule
            if schedule.group_rule == "same":
                base = seg.base_lr
            elif schedule.group_rule == "ratio" and seg.base_lr > 0:
                schedule = schedule.scaled(base / seg.base_lr)
            ours = ours._append(replace(seg, base_lr=base, schedule=schedule))
            previous = seg
        return replace(ours, total_steps=self.total_steps, script=self.script if ours.segments else None)

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "initial_lr": self.initial_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "per_epoch": self.per_epoch,
            "segments": [s.to_dict() for s in self.segments],
        }
        if self.steps_only:
            data["steps_only"] = True
        if self.script is not None:
            data["script"] = self.script.to_dict()
            if self.script.how != "mapped":  # the placeholder is no schedule the run had: its label instead
                data["segments"][0]["spec"] = self.script.label()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        k = int(data["steps_per_epoch"])
        script = ScriptSchedule.from_dict(data["script"]) if data.get("script") else None
        segments = [dict(s) for s in data["segments"]]
        if script is not None and script.how != "mapped" and segments:
            segments[0]["spec"] = "constant"  # its placeholder
        return cls(
            float(data["initial_lr"]),
            k,
            tuple(Segment.from_dict(s, k) for s in segments),
            data.get("total_steps"),
            bool(data.get("per_epoch", False)),
            bool(data.get("steps_only", False)),
            script,
        )

    # -- what is shown ----------------------------------------------------------------------
    def is_script(self, seg: Segment) -> bool:
        """``seg`` is the script's own schedule (not an edit of it: that is lrwatch's, after a take-over)."""
        return self.script is not None and bool(self.segments) and seg is self.segments[0]

    def label_of(self, seg: Segment) -> str:
        """A segment as ``ls``, the panel, ``run.json`` and ``view --summary`` name it: its spec, or the
        script's own schedule's label (``LambdaLR (observed)``, ``set by the script``)."""
        if self.is_script(seg) and self.script is not None:
            return self.script.label(str(seg.spec))
        return str(seg.spec)

    def edit_refusal(self, step: int) -> str | None:
        """Why the schedule in force at ``step`` has no parameters to edit: it is the script's own, observed or
        set by hand (one line, what can be done instead); ``None`` when it can be edited."""
        seg = self.segment_at(step)
        script = self.script
        if script is None or script.how == "mapped" or not self.is_script(seg):
            return None
        what = "set by the script" if script.how == "by-hand" else f"the script's {script.source}, observed"
        return f"the LR is {what}: a switch (e c r s, :, send switch) replaces it; edits need a switch first"

    @property
    def preview_end(self) -> int | None:
        """The step the preview ends at before the run's end: the script's observed LRs' last (or 0, set by
        hand: nothing ahead), while its schedule is the last segment; ``None``: to the run's end."""
        if self.script is None or len(self.segments) > 1:
            return None
        return self.script.horizon
