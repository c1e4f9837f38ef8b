"""The charts' x axis: where it ends, how far the loss chart zooms, and its unit (epochs, steps, wall time).

No Textual here. Steps are what the history and the timeline count; an :class:`XAxis` turns them into
the unit shown:

- ``epochs``: ``step / steps_per_epoch`` (the default where a run has epochs);
- ``steps``: the optimizer step itself (the default, and the only count, where it has none);
- ``time``: wall time since the run started, from a :class:`StepClock` (the run's events and the
  monitor's own samples of the step; the run ahead at the current rate), in s, min or h.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lrwatch.schedule.timeline import Timeline

AXIS_MODES = ("epochs", "steps", "time")
AXIS_LABELS = {"epochs": "epochs", "steps": "steps", "time": "wall time"}


def nice_ceil(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ ``value`` (and 1 for anything ≤ 1)."""
    if value <= 1:
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-12))


def planned_end(timeline: Timeline, step: int) -> int:
    """The step the x axis ends at: the planned run; when its length is unknown, a round number of
    epochs (steps, for a run without epochs) past ``step`` that grows with the run in jumps
    (…, 200, 250, 500, 1000, …), so the current step moves across the chart and the chart redraws as it
    does (with a fixed ratio to ``step`` it would stand in one column for ever)."""
    if timeline.total_steps:
        return max(timeline.total_steps, step + 1)
    k = timeline.steps_per_epoch
    ahead = max(step * 1.25, step + 10 * k) / k  # at least the "10 epochs ahead" the fitted defaults assume
    return round(nice_ceil(ahead) * k)


def zoomed_end(end: int, step: int, since: int = 0) -> int:
    """The whole-run loss chart's right end: ``end`` halved while the data (``since``…``step``) still fills
    more than half of what is left, so the loss is drawn across the chart from the first minute; from
    halfway through the run on it is ``end``, the LR chart's axis (the switch markers line up again)."""
    hi = end
    while (hi - since) / 2 >= max(1.1 * (step - since), 8) and hi > since + 16:
        hi = since + (hi - since) // 2
    return hi


MAX_SAMPLES = 4096


@dataclass
class StepClock:
    """Wall time of each step, from ``(step, time)`` samples: the run's events (each has both) and the
    monitor's own readings of the current step. Between samples: linear; before the first: the first;
    past the last: at ``rate`` steps/s (the run ahead, for the preview)."""

    steps: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def add(self, step: int, time: float) -> None:
        """A sample. A step sampled again later (a pause) keeps its first and its last time: the steps before
        it are placed before the pause, those after it after."""
        if self.steps and step <= self.steps[-1]:
            if step == self.steps[-1] and time > self.times[-1]:
                if len(self.steps) > 1 and self.steps[-2] == step:
                    self.times[-1] = time
                else:
                    self.steps.append(int(step))
                    self.times.append(float(time))
            return
        if self.times and time < self.times[-1]:
            return
        self.steps.append(int(step))
        self.times.append(float(time))
        if len(self.steps) > MAX_SAMPLES:  # a long run sampled twice a second: every other one is enough
            self.steps[1:-1], self.times[1:-1] = self.steps[1:-1:2], self.times[1:-1:2]

    @property
    def start(self) -> float:
        return self.times[0] if self.times else 0.0

    def rate(self) -> float:
        """Steps per second over the run so far (≥ a tiny positive number)."""
        if len(self.steps) < 2 or self.times[-1] <= self.times[0]:
            return 1.0
        return max((self.steps[-1] - self.steps[0]) / (self.times[-1] - self.times[0]), 1e-9)

    def seconds(self, steps: np.ndarray) -> np.ndarray:
        """Seconds since the run's first sample at each of ``steps``."""
        steps = np.asarray(steps, dtype=np.float64)
        if not self.steps:
            return steps * 0.0
        xp, fp = np.asarray(self.steps, dtype=np.float64), np.asarray(self.times, dtype=np.float64) - self.start
        out = np.interp(steps, xp, fp)
        ahead = steps > xp[-1]
        if ahead.any():
            out[ahead] = fp[-1] + (steps[ahead] - xp[-1]) / self.rate()
        return out


TIME_UNITS = ((3 * 3600, 3600.0, "h"), (180, 60.0, "m"), (0, 1.0, "s"))


@dataclass(frozen=True)
class XAxis:
    """Steps → the charts' x unit. ``suffix`` goes after each tick label (``m`` for minutes)."""

    mode: str = "epochs"
    steps_per_epoch: int = 1
    clock: StepClock | None = None
    scale: float = 1.0  # time: seconds per unit
    suffix: str = ""

    @classmethod
    def make(cls, mode: str, timeline: Timeline, *, epochs_known: bool = True, clock: StepClock | None = None,
             end: int = 1) -> XAxis:  # fmt: skip
        """The axis for ``mode``: epochs fall back to steps on a run without epochs; time needs ``clock``
        and picks its unit from the span up to ``end``."""
        k = timeline.steps_per_epoch
        if mode == "time" and clock is not None:
            span = float(clock.seconds(np.array([end]))[0])
            _threshold, scale, suffix = next(unit for unit in TIME_UNITS if span >= unit[0])
            return cls("time", k, clock, scale, suffix)
        if mode == "epochs" and epochs_known:
            return cls("epochs", k)
        return cls("steps", k)

    def x(self, steps: np.ndarray | float) -> np.ndarray:
        steps = np.asarray(steps, dtype=np.float64)
        if self.mode == "time" and self.clock is not None:
            return self.clock.seconds(steps) / self.scale
        if self.mode == "steps":
            return steps
        return steps / self.steps_per_epoch

    def at(self, step: float) -> float:
        return float(self.x(np.array([step], dtype=np.float64))[0])

    @property
    def label(self) -> str:
        """What the axis counts, for a title: ``epochs``, ``steps``, ``wall time``."""
        return AXIS_LABELS[self.mode]


def next_mode(mode: str, epochs_known: bool) -> str:
    """The axis after ``mode`` (``x``): epochs → steps → wall time → epochs; no epochs on a run without them."""
    modes = [m for m in AXIS_MODES if epochs_known or m != "epochs"]
    return modes[(modes.index(mode) + 1) % len(modes)] if mode in modes else modes[0]
