"""The optimizer's LR, per param group: each group's LR at a step from its own timeline.

Each group starts at its own initial LR (a scheduler's ``initial_lr``, else its ``lr``; its ratio to group 0's
kept when ``watch(lr=...)`` sets the run's) and follows :meth:`Timeline.for_group`: the per-group rule of the
schedule's twin. LRs come from :meth:`Timeline.lrs` over aligned blocks of :data:`LR_BLOCK` steps, the same call the
preview makes, kept as Python floats so that a step costs an index, not a numpy scalar. A tensor LR
(capturable or fused optimizers) is filled in place: the optimizer keeps its tensor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lrwatch.schedule.timeline import Timeline

LR_BLOCK = 1024


class GroupLrs:
    """Sets every param group's LR of ``optimizer`` along ``timeline`` (:meth:`set`, once per step)."""

    def __init__(self, optimizer: Any, timeline: Timeline) -> None:
        self.optimizer = optimizer
        # A PyTorch scheduler keeps each group's starting LR as initial_lr: its LR now may be a warmup's 0
        initial = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
        ratios = [lr / initial[0] if initial[0] > 0 else 1.0 for lr in initial]
        self.initial = [timeline.initial_lr * r if r != 1.0 else timeline.initial_lr for r in ratios]
        self._timeline = timeline
        self._group_timelines: list[Timeline] = []
        self._block_start = -1
        self._blocks: list[list[float]] = []

    def with_timeline(self, timeline: Timeline) -> GroupLrs:
        """Another setter of the same groups, from the same initial LRs, along ``timeline`` (a race's candidate)."""
        other = GroupLrs.__new__(GroupLrs)
        other.optimizer, other.initial = self.optimizer, list(self.initial)
        other.set_timeline(timeline)
        return other

    def set_timeline(self, timeline: Timeline) -> None:
        self._timeline = timeline
        self._block_start = -1
        self._group_timelines = []

    def set(self, step: int) -> float:
        """Every group's LR at ``step``; returns group 0's."""
        offset = step - self._block_start
        if self._block_start < 0 or not 0 <= offset < LR_BLOCK:
            if not self._group_timelines:
                self._group_timelines = [self._timeline.for_group(lr) for lr in self.initial]
            self._block_start = step - step % LR_BLOCK
            steps = np.arange(self._block_start, self._block_start + LR_BLOCK)
            distinct = {id(t): t for t in self._group_timelines}  # groups that share a timeline share a block
            computed = {key: t.lrs(steps).tolist() for key, t in distinct.items()}
            self._blocks = [computed[id(t)] for t in self._group_timelines]
            offset = step - self._block_start
        for group, block in zip(self.optimizer.param_groups, self._blocks, strict=True):
            current = group["lr"]
            if current.__class__ is float or not hasattr(current, "fill_"):
                group["lr"] = block[offset]
            else:
                current.fill_(block[offset])
        return self._blocks[0][offset]

    def block(self) -> tuple[int, list[tuple[dict[str, Any], list[float]]]] | None:
        """The block last set: its first step, and each param group with its LRs (``None``: none yet, or a
        group's LR is a tensor, which :meth:`set` fills in place)."""
        if self._block_start < 0:
            return None
        pairs = list(zip(self.optimizer.param_groups, self._blocks, strict=True))
        if any(group["lr"].__class__ is not float for group, _ in pairs):
            return None
        return self._block_start, pairs


def host_lr(group: dict[str, Any]) -> float | None:
    """A group's LR as a float, or ``None`` for a tensor on a GPU (reading it would wait for the device)."""
    lr = group["lr"]
    device = getattr(lr, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        return None
    return float(lr)
