"""The LR range test (Smith 2017, "Cyclical Learning Rates"; the algorithm and defaults of
``torch-lr-finder`` and fastai's ``lr_find``), run from a snapshot that is restored afterwards.

For batch ``i`` of ``num_iter`` the LR is ``start_lr · (end_lr / start_lr)^(i / (num_iter − 1))``
(``start_lr`` for the first batch, ``end_lr`` for the last). The loss is smoothed exponentially,
``s_0 = loss_0``, ``s_i = f · loss_i + (1 − f) · s_{i−1}`` (``f = 0.05``), and the test stops at the
first ``s_i > diverge · min(s_0 … s_i)`` (``diverge = 5``) or a non-finite loss.

Two suggestions, as the LR finders give them:

- **steepest**: the LR at the minimum of ``ds / d(ln lr)`` (``numpy.gradient`` over ``ln lr``), the
  point where the smoothed loss falls fastest. As ``torch-lr-finder``'s ``plot(suggest_lr=True)``, the
  first 10 and last 5 points are left out (the smoothing's start-up and the blow-up) when there are
  enough of them;
- **min/10**: the LR at the minimum of the smoothed loss, divided by 10.

Model, optimizer (with every group's LR) and the RNG states are put back exactly as they were.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrwatch.run.checkpoints import HostState

START_LR, END_LR, NUM_ITER, SMOOTH, DIVERGE = 1e-7, 10.0, 100, 0.05, 5.0
SKIP_START, SKIP_END = 10, 5  # torch-lr-finder's plot(skip_start=10, skip_end=5), where it suggests


@dataclass(frozen=True)
class RangeTest:
    """What a range test saw: per batch the LR it used, its loss and the smoothed loss."""

    lrs: np.ndarray
    losses: np.ndarray
    smoothed: np.ndarray
    diverged: bool  # stopped early: the smoothed loss passed ``diverge`` × its minimum (or a loss was not finite)

    @property
    def steepest(self) -> float | None:
        """The LR where the smoothed loss falls fastest against ``ln lr`` (None: under 3 usable points)."""
        start, end = (SKIP_START, len(self.lrs) - SKIP_END) if len(self.lrs) >= SKIP_START + SKIP_END + 3 else (0, None)
        lrs, smoothed = self.lrs[start:end], self.smoothed[start:end]
        if self.diverged and end is None:
            lrs, smoothed = lrs[:-1], smoothed[:-1]  # the point that ended the test
        if len(lrs) < 3:
            return None
        slope = np.gradient(smoothed, np.log(lrs))
        return float(lrs[int(np.argmin(slope))])

    @property
    def min_over_10(self) -> float | None:
        """A tenth of the LR at the smoothed loss's minimum."""
        if not len(self.lrs):
            return None
        return float(self.lrs[int(np.nanargmin(self.smoothed))]) / 10

    def rows(self) -> list[tuple[float, float, float]]:
        """``(lr, loss, smoothed)`` per batch, for ``lr_find.csv``."""
        return list(zip(self.lrs.tolist(), self.losses.tolist(), self.smoothed.tolist(), strict=True))


def lr_schedule(start_lr: float, end_lr: float, num_iter: int) -> np.ndarray:
    """``start_lr · (end_lr / start_lr)^(i / (num_iter − 1))`` for ``i = 0 … num_iter − 1``."""
    if not (0 < start_lr < end_lr and math.isfinite(end_lr)):
        raise ValueError(f"the range test needs 0 < start_lr < end_lr (got {start_lr}, {end_lr})")
    if num_iter < 2:
        raise ValueError(f"the range test needs num_iter >= 2 (got {num_iter})")
    return start_lr * (end_lr / start_lr) ** (np.arange(num_iter) / (num_iter - 1))


def smooth_until_divergence(losses: Iterable[float], smooth: float = SMOOTH, diverge: float = DIVERGE):
    """Yield ``(loss, smoothed, stop)`` per loss: ``stop`` when this point ends the test."""
    smoothed = best = math.nan
    for i, loss in enumerate(losses):
        smoothed = loss if i == 0 else smooth * loss + (1 - smooth) * smoothed
        best = smoothed if i == 0 else min(best, smoothed)
        yield loss, smoothed, not math.isfinite(smoothed) or smoothed > diverge * best


def range_test(
    model: Any,
    optimizer: Any,
    train_step: Callable[[Any], Any],
    batches: Iterable[Any],
    *,
    start_lr: float = START_LR,
    end_lr: float = END_LR,
    num_iter: int = NUM_ITER,
    smooth: float = SMOOTH,
    diverge: float = DIVERGE,
) -> RangeTest:
    """Run the test: ``train_step(batch) -> loss`` trains one batch (forward, backward, ``optimizer.step()``)
    at the LR set here; ``batches`` gives at least ``num_iter`` of them. Everything is restored after."""
    lrs = lr_schedule(start_lr, end_lr, num_iter)
    saved, saved_lrs = HostState.take(model, optimizer), [g["lr"] for g in optimizer.param_groups]
    used: list[float] = []
    raw: list[float] = []

    def losses() -> Iterable[float]:
        for lr, batch in zip(lrs.tolist(), batches, strict=False):
            for group in optimizer.param_groups:
                group["lr"] = lr
            used.append(lr)
            loss = train_step(batch)
            raw.append(float(loss.detach().item() if hasattr(loss, "detach") else loss))  # one read per batch
            yield raw[-1]

    smoothed: list[float] = []
    diverged = False
    try:
        for _loss, value, stop in smooth_until_divergence(losses(), smooth, diverge):
            smoothed.append(value)
            if stop:
                diverged = True
                break
    finally:
        saved.load(model, optimizer)
        for group, lr in zip(optimizer.param_groups, saved_lrs, strict=True):
            group["lr"] = lr
    return RangeTest(np.array(used), np.array(raw), np.array(smoothed), diverged)
