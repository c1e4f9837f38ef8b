"""Which schedules to put side by side: the comparison set (``v`` in the monitor, a race with no
candidates given) and the test that a candidate is only continuing again.

The comparison set is up to four kinds with their fitted defaults, switched in at the current step, in
the order of :data:`COMPARISON_ORDER`: the four textbook decays PyTorch users reach for first (cosine
annealing to the end, exponential decay to 1% of the LR, two ×0.1 steps, three SGDR cycles), then
linear decay and warmup–stable–decay where the run has them. A kind whose fitted schedule would
equal continuing (the schedule in force, fitted to the same end) is skipped, and the next takes its
place: comparing a schedule with itself shows nothing. Kinds that end the run (``cooldown``) or react
to a metric (``plateau``) are never in it; any kind can still be a candidate by its key or the picker.
"""

from __future__ import annotations

import numpy as np

from lrwatch.schedule.spec import KINDS
from lrwatch.schedule.timeline import Timeline

COMPARISON_ORDER = ("cosine", "exp", "step", "cosine-restarts", "linear", "wsd", "poly", "inverse-sqrt")
COMPARISON_SIZE = 4
SAME_RTOL = 0.05  # LRs within 5% at 99% of the horizon's steps: the same schedule, for a comparison
SAME_SHARE = 0.99  # (a step decay's drop a few steps later is still the same schedule)
SAME_HORIZON_STEPS = 2000  # at most this many steps are compared (evenly spaced over the horizon)


def comparison_horizon(timeline: Timeline, step: int) -> int:
    """The steps over which two schedules are compared: the rest of the run, or 10 epochs when unknown."""
    if timeline.total_steps:
        return max(timeline.total_steps - step, 1)
    return 10 * timeline.steps_per_epoch


def same_as(a: Timeline, b: Timeline, step: int, horizon: int) -> bool:
    """Whether ``a`` and ``b`` apply LRs within :data:`SAME_RTOL` of each other at :data:`SAME_SHARE` of the
    steps ``step … step+horizon−1``."""
    count = min(max(horizon, 1), SAME_HORIZON_STEPS)
    steps = np.unique(np.linspace(step, step + max(horizon, 1) - 1, count).astype(np.int64))
    x, y = a.lrs(steps), b.lrs(steps)
    scale = np.maximum(np.maximum(np.abs(x), np.abs(y)), 1e-300)
    return bool(np.mean(np.abs(x - y) <= SAME_RTOL * scale) >= SAME_SHARE)


def comparison_specs(timeline: Timeline, step: int, anchor: str = "continue", size: int = COMPARISON_SIZE) -> list[str]:
    """The comparison set at ``step``: up to ``size`` kind names (fitted when switched in), in
    :data:`COMPARISON_ORDER`, none equal to continuing."""
    horizon = comparison_horizon(timeline, step)
    out: list[str] = []
    for kind in COMPARISON_ORDER:
        if kind not in KINDS or len(out) == size:
            continue
        if not same_as(timeline.switch(step, kind, anchor), timeline, step, horizon):
            out.append(kind)
    return out


CYCLE_SAMPLES = 4000  # LRs evaluated (evenly spaced) to find where a schedule's cycle ends


def after_cycle(timeline: Timeline, start: int, end: int | None) -> tuple[str, int, float] | None:
    """What the schedule in force from ``start`` does once its cycle is over, if that happens before
    ``end`` (the run's planned end; None: unknown, nothing to say):

    - ``("rises", s, lr)``: past its lowest point (step ``s``, LR ``lr``) the LR climbs again, smoothly,
      as PyTorch's ``CosineAnnealingLR`` does past ``T_max`` (a warm restart's jump is a design, not this);
    - ``("flat", s, lr)``: a decay that reaches ``lr`` at step ``s`` and stays there to the end (a linear or
      polynomial decay shorter than the run); a step decay's last drop is a design, not this.
    """
    if end is None or end - start < 3:
        return None
    steps = np.unique(np.linspace(start, end - 1, min(end - start, CYCLE_SAMPLES)).astype(np.int64))
    lrs = timeline.lrs(steps)
    if not np.all(np.isfinite(lrs)):
        return None
    low = int(np.argmin(lrs))
    span = float(lrs.max() - lrs.min())
    if span <= 1e-12 * max(float(lrs.max()), 1e-300):
        return None
    rise = lrs[low:]
    if len(rise) > 2 and rise.max() - rise[0] > 0.01 * span and np.diff(rise).max() < 0.25 * span:
        return "rises", int(steps[low]), float(lrs[low])
    flat = np.isclose(lrs, lrs[-1], rtol=1e-9, atol=0.0)
    first = len(flat) - int(np.argmin(flat[::-1])) if not flat.all() else 0  # first index of the final plateau
    tail = steps[-1] - steps[first]
    # Reached by a decay, not a drop: the last step into the plateau is no steeper than the one before.
    entry, before = (lrs[first - 1] - lrs[first], lrs[first - 2] - lrs[first - 1]) if first > 1 else (1.0, 0.0)
    continuous = before > 0 and entry <= 2 * before
    if first > 0 and tail > 0.02 * (end - start) and continuous and lrs[0] > lrs[-1]:
        return "flat", int(steps[first]), float(lrs[-1])
    return None
