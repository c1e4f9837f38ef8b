"""Who sets the optimizer's LR, and what it is (no Textual, no run directory).

Three owners, one per run:

- **lrwatch** (``drive=True``): every step's LR comes from the timeline (:class:`~lrwatch.run.groups.GroupLrs`),
  set at the step boundary. A PyTorch scheduler that still moves it is noticed once, before the next
  ``optimizer.step()`` (a pre-hook), and said in a warning.
- **the loop's own scheduler** (``drive=False``, monitor-only): lrwatch reads the LR each
  ``optimizer.step()`` really uses, in the same pre-hook.
- **the scheduler until a switch** (``take_over=True``, ``lrwatch run``): the first switch hands the
  LR to lrwatch (:meth:`LrControl.hand_over`), which from then on sets it again in the pre-hook,
  before every step, whatever the scheduler did since the boundary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lrwatch.run.groups import GroupLrs, host_lr
from lrwatch.schedule.timeline import Timeline


class LrControl:
    """The optimizer's LR: set from ``timeline`` (driving) or read (watching); ``warn`` says what went wrong."""

    def __init__(
        self, optimizer: Any, timeline: Timeline, *, drive: bool, take_over: bool, warn: Callable[[str], None]
    ) -> None:
        self.optimizer = optimizer
        self.drive = drive
        self.take_over = take_over and not drive  # the first switch hands the LR to lrwatch
        self.took_over = False
        self.took_over_at: int | None = None  # the step from which lrwatch drives (a checkpoint keeps it)
        self.hand_over_at: int | None = None  # a resumed run: hand over when the run gets there again
        self.warn = warn
        self.lr = timeline.initial_lr if drive else float(optimizer.param_groups[0]["lr"])
        self._groups = GroupLrs(optimizer, timeline)
        self.current_step = 0  # the step whose LR was set last
        self._warned = False
        self.suspended = False  # the LR range test sets the LR itself, batch by batch
        hook = getattr(optimizer, "register_step_pre_hook", None)
        self._hook = hook(self._before_optimizer_step) if hook is not None else None

    @property
    def awaiting_hand_over(self) -> bool:
        """Watching until a switch, which has not come yet."""
        return self.take_over and not self.took_over

    def set_timeline(self, timeline: Timeline) -> None:
        self._groups.set_timeline(timeline)

    def groups_for(self, timeline: Timeline) -> GroupLrs:
        """Every group's LR along ``timeline`` instead, set by the caller (a race's candidate)."""
        return self._groups.with_timeline(timeline)

    def set(self, step: int) -> None:
        """The LR of ``step``, from the timeline, into every param group (when lrwatch drives)."""
        self.current_step = step
        if self.hand_over_at is not None and step >= self.hand_over_at and not self.took_over:
            self.hand_over(self.hand_over_at)
        if self.drive:
            self.lr = self._groups.set(step)

    def fast_block(self) -> tuple[int, list[tuple[dict[str, Any], list[float]]]] | None:
        """The LR block in force, for the engine's fast step (:meth:`Engine.step`): its first step and each param
        group with its LRs over the block. ``None`` when a step must go the whole way: lrwatch does not drive,
        a hand-over waits for its step, the range test sets the LR, or a group's LR is a tensor."""
        if not self.drive or self.suspended or self.hand_over_at is not None:
            return None
        return self._groups.block()

    def hand_over(self, step: int) -> None:
        """From ``step`` (the boundary it happens at) lrwatch drives the LR, and sets it before every
        ``optimizer.step()``."""
        self.drive, self.took_over = True, True
        self.took_over_at = step

    def reapply(self) -> None:
        """Set this step's LR again (after a hand-over: the loop's scheduler may have moved it)."""
        if self.took_over:
            self.set(self.current_step)

    def after_step(self) -> None:
        """A step was taken: read the LR it used (watching, with no hook), or notice a scheduler (driving)."""
        if not self.drive:
            if self._hook is None:
                self.lr = host_lr(self.optimizer.param_groups[0]) or self.lr
        elif not self._warned and not self.took_over:
            lr = self.optimizer.param_groups[0]["lr"]
            if lr.__class__ is not float:
                self._check_outside_change(host_lr(self.optimizer.param_groups[0]))
            elif lr != self.lr:
                self._check_outside_change(lr)

    def _before_optimizer_step(self, optimizer: Any, *_args: Any) -> None:
        """Read the LR the step really uses (watching), set it again (handed over), or notice a scheduler."""
        if self.suspended:
            return
        if self.took_over:
            self.reapply()
            return
        lr = host_lr(optimizer.param_groups[0])
        if lr is None:
            return
        if not self.drive:
            self.lr = lr
        else:
            self._check_outside_change(lr)

    def _check_outside_change(self, lr: float | None) -> None:
        if lr is None or lr == self.lr or self._warned:
            return
        if not isinstance(self.optimizer.param_groups[0]["lr"], float) and abs(lr - self.lr) <= 1e-6 * self.lr:
            return  # a float32 tensor LR holds what lrwatch wrote, rounded
        self._warned = True
        self.warn(
            f"the optimizer's LR was changed outside lrwatch ({lr:.6g} instead of {self.lr:.6g}): "
            "is a PyTorch scheduler still stepping? Remove it, or use lrwatch.watch(..., drive_lr=False)"
        )

    def remove(self) -> None:
        """The run ended: the optimizer is the loop's again."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
