"""A run's learning rate as a timeline of schedule segments.

A segment applies from its ``start_step`` until the next segment starts. Its schedule's epoch
``t`` counts from ``origin_step``:

- per-batch updates (default): ``t = (step − origin_step) / steps_per_epoch``, the fractional
  epoch PyTorch's ``CosineAnnealingWarmRestarts.step(epoch + i / iters)`` uses;
- per-epoch updates: ``t = ⌊step / K⌋ − ⌊origin_step / K⌋``, so the LR changes only at epoch
  boundaries, as in a loop that calls ``scheduler.step()`` once per epoch.

A switch at step ``k`` starts a segment with ``origin_step = k`` whose base LR is the LR in
force at ``k − 1`` (``anchor=continue``, no jump) or the run's initial LR (``anchor=base``,
a warm restart). An edit of the active schedule's parameters keeps its origin and base LR.
The run applies exactly :meth:`Timeline.lrs`: the preview and the real thing are one code path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lrwatch.schedule.spec import Schedule, ScheduleSpec, SpecError, parse_spec, resolve, spec_of

DEFAULT_REMAINING_EPOCHS = 10.0  # for defaults when the run's length is unknown


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "start_step": self.start_step,
            "origin_step": self.origin_step,
            "base_lr": self.base_lr,
            "spec": str(self.spec),
            "anchor": self.anchor,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        spec = parse_spec(data["spec"])
        return cls(
            int(data["start_step"]),
            int(data["origin_step"]),
            float(data["base_lr"]),
            resolve(spec, DEFAULT_REMAINING_EPOCHS),
            data.get("anchor", "continue"),
        )


@dataclass(frozen=True)
class Timeline:
    """Immutable; :meth:`switch` and :meth:`edit` return a new timeline."""

    initial_lr: float
    steps_per_epoch: int
    segments: tuple[Segment, ...]
    total_steps: int | None = None
    per_epoch: bool = False

    @classmethod
    def start(
        cls,
        spec: ScheduleSpec | str,
        *,
        lr: float,
        steps_per_epoch: int,
        total_steps: int | None = None,
        per_epoch: bool = False,
    ) -> Timeline:
        if not (lr > 0 and np.isfinite(lr)):
            raise SpecError(f"lr must be a finite number > 0 (got {lr})")
        if steps_per_epoch < 1:
            raise SpecError(f"steps per epoch must be >= 1 (got {steps_per_epoch})")
        if isinstance(spec, str):
            spec = parse_spec(spec)
        lr = spec.lr if spec.lr is not None else lr  # lr=: the segment's starting LR, given in the spec
        empty = cls(lr, int(steps_per_epoch), (), total_steps, per_epoch)
        return empty._with_segment(0, spec, origin_step=0, base_lr=lr)

    # -- evaluation -------------------------------------------------------------------------
    def epoch_at(self, steps: np.ndarray | int) -> np.ndarray:
        """Fractional epoch position of each step: ``step / steps_per_epoch``."""
        return np.asarray(steps, dtype=np.float64) / self.steps_per_epoch

    def _local_t(self, steps: np.ndarray, origin: int) -> np.ndarray:
        if self.per_epoch:
            k = self.steps_per_epoch
            return (steps // k - origin // k).astype(np.float64)
        return (steps - origin).astype(np.float64) / self.steps_per_epoch

    def lrs(self, steps: np.ndarray | range | list[int]) -> np.ndarray:
        """The LR applied at each (integer) step, vectorised."""
        steps = np.asarray(steps, dtype=np.int64)
        out = np.empty(steps.shape, dtype=np.float64)
        starts = np.array([s.start_step for s in self.segments], dtype=np.int64)
        which = np.searchsorted(starts, steps, side="right") - 1
        for i, seg in enumerate(self.segments):
            mask = which == i
            if mask.any():
                out[mask] = seg.schedule.lr(seg.base_lr, self._local_t(steps[mask], seg.origin_step))
        return out

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

    def remaining_epochs(self, step: int) -> float:
        if self.total_steps is None:
            return DEFAULT_REMAINING_EPOCHS
        return max(self.total_steps - step, 1) / self.steps_per_epoch

    # -- changes ----------------------------------------------------------------------------
    def _with_segment(self, step: int, spec: ScheduleSpec, *, origin_step: int, base_lr: float) -> Timeline:
        schedule = resolve(spec, self.remaining_epochs(origin_step))
        return self._append(Segment(step, origin_step, base_lr, schedule, spec.anchor or "continue"))

    def _append(self, seg: Segment) -> Timeline:
        kept = tuple(s for s in self.segments if s.start_step < seg.start_step)
        return replace(self, segments=(*kept, seg))

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
        if not (lr > 0 and np.isfinite(lr)):
            raise SpecError(f"cannot take over from lr {lr}: not a finite number > 0")
        return self._with_segment(step, spec, origin_step=step, base_lr=float(lr))

    def edit(self, step: int, **params: float) -> Timeline:
        """Change parameters of the schedule active at ``step``, keeping its origin and base LR."""
        active = self.segment_at(step)
        new_spec = replace(active.spec.with_params(**params), anchor=active.anchor)
        schedule = resolve(new_spec, self.remaining_epochs(active.origin_step))
        return self._append(Segment(step, active.origin_step, active.base_lr, schedule, active.anchor))

    def scale(self, step: int, factor: float) -> Timeline:
        """Multiply the LR from ``step`` on by ``factor``, keeping the active schedule's shape (a rollback)."""
        active = self.segment_at(step)
        return self._append(Segment(step, active.origin_step, active.base_lr * factor, active.schedule, active.anchor))

    def for_group(self, initial_lr: float) -> Timeline:
        """This timeline as a param group whose initial LR is ``initial_lr`` follows it: PyTorch's rule
        per group (its own base LR, the same absolute ``eta_min``). Every segment's base LR is derived
        as the run's was: a switch starts from this group's own LR before it (``continue``) or from
        ``initial_lr`` (``base``); an edit keeps the base, a scale multiplies it, by the same factor
        as the run's segment did."""
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
            ours = ours._append(replace(seg, base_lr=group_rule * factor))
            previous = seg
        return ours

    # -- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "initial_lr": self.initial_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "per_epoch": self.per_epoch,
            "segments": [s.to_dict() for s in self.segments],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Timeline:
        return cls(
            float(data["initial_lr"]),
            int(data["steps_per_epoch"]),
            tuple(Segment.from_dict(s) for s in data["segments"]),
            data.get("total_steps"),
            bool(data.get("per_epoch", False)),
        )
