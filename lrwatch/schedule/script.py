"""The script's own schedule, in force until lrwatch takes the LR over (``lrwatch run`` on a script that never
calls ``lrwatch.watch()``): what the timeline's first segment is, and how it is previewed. No torch here.

Three ways a script sets its LR, each shown as what it is (:attr:`ScriptSchedule.how`):

- ``mapped``: a PyTorch scheduler lrwatch knows (``SequentialLR`` warmup + decay, ``OneCycleLR``, ``LinearLR``,
  ``MultiStepLR``, ``StepLR``, the cosines, ...). The segment is the equal lrwatch spec, its origin at the
  scheduler's step 0; stepped every ``every`` optimizer steps (1: per batch; an epoch's steps: once per epoch),
  its clock counts whole scheduler steps: ``t = ⌊(step − origin) / every⌋ · every``.
- ``observed``: a scheduler lrwatch has no spec for (a ``LambdaLR`` of the script's own, ``CyclicLR``, ...).
  Its LRs ahead were found by stepping a copy of it (never the real optimizer): ``values[i]`` is the LR of
  step ``values_from + i``; before them the first, past them nothing (the preview ends there).
- ``by-hand``: no scheduler; the script sets ``param_group["lr"]`` itself (nanoGPT's ``get_lr``), or leaves it.
  Nothing ahead is known, so nothing is previewed.

The segment of an ``observed`` or ``by-hand`` schedule holds a ``constant`` placeholder (the LR at its
start, which a candidate continues from); ``run.json`` and the events write its label instead of a spec.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

HOWS = ("mapped", "observed", "by-hand")
BY_HAND = "set by the script"
MAX_AHEAD = 4096  # observed: at most this many steps ahead are found (stepping a copy costs ~20 µs a step)


@dataclass(frozen=True)
class ScriptSchedule:
    """The script's own schedule: ``how`` (``mapped`` | ``observed`` | ``by-hand``), ``source`` (the
    scheduler's name, ``SequentialLR (LinearLR, CosineAnnealingLR)``), ``every`` (optimizer steps per
    scheduler step; 0: not seen stepping yet), ``values`` from ``values_from`` (observed)."""

    how: str
    source: str = ""
    every: int = 1
    values: tuple[float, ...] = ()
    values_from: int = 0

    def __post_init__(self) -> None:
        if self.how not in HOWS:
            raise ValueError(f"how must be one of {', '.join(HOWS)} (got {self.how!r})")

    @property
    def horizon(self) -> int | None:
        """The first step the preview does not know: past the observed values; 0 with none (a schedule set
        by hand: nothing ahead is drawn); ``None`` for a mapped one (its spec knows every step; 0 until its
        cadence is seen)."""
        if self.how == "mapped":
            return None if self.every else 0  # not seen stepping yet: its clock is not known
        return self.values_from + len(self.values) if self.values else 0

    def cadence(self, steps_per_epoch: int = 0) -> str:
        """``stepped per batch``, ``stepped per epoch`` (every ``steps_per_epoch`` steps), ``stepped every N
        steps``; empty when it was not seen stepping."""
        if self.every == 1:
            return "stepped per batch"
        if self.every > 1:
            return "stepped per epoch" if self.every == steps_per_epoch else f"stepped every {self.every:,} steps"
        return ""

    def label(self, spec: str | None = None) -> str:
        """One line, the same in ``ls``, the panel, ``run.json`` and ``view --summary``: the mapped spec, or
        ``LambdaLR (observed)``, or ``set by the script``."""
        if self.how == "mapped" and spec is not None:
            return spec
        if self.how == "observed":
            return f"{self.source} (observed)"
        return BY_HAND

    def lrs(self, steps: np.ndarray) -> np.ndarray:
        """Observed LRs at ``steps`` (``values`` must not be empty): the first value before them, the last past
        them (a candidate's starting point; the chart draws the preview only up to :attr:`horizon`)."""
        values = np.asarray(self.values, dtype=np.float64)
        index = np.asarray(steps, dtype=np.int64) - self.values_from
        return values[np.clip(index, 0, len(values) - 1)]

    def with_values(self, values: list[float] | tuple[float, ...], values_from: int) -> ScriptSchedule:
        return replace(self, values=tuple(float(v) for v in values), values_from=int(values_from))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"how": self.how, "source": self.source, "every": self.every}
        if self.how == "observed":
            data["values_from"] = self.values_from
            data["values"] = list(self.values)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScriptSchedule:
        return cls(
            str(data["how"]),
            str(data.get("source", "")),
            int(data.get("every", 1)),
            tuple(float(v) for v in data.get("values", ())),
            int(data.get("values_from", 0)),
        )


def quantized(t: np.ndarray, every: int) -> np.ndarray:
    """A scheduler stepped every ``every`` optimizer steps: its clock in whole scheduler steps, as steps."""
    if every <= 1:
        return t
    return np.floor_divide(t, every) * every
