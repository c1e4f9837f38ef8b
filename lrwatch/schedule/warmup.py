"""Warmup on every kind: a linear ramp first, then the kind on its own clock.

``lr(t) = lr0 · (warmup_start + (1 − warmup_start) · t / warmup)`` for ``t < warmup``, then the kind's
``lr(t − warmup)``: PyTorch's ``SequentialLR([LinearLR(start_factor=warmup_start, total_iters=warmup), X],
milestones=[warmup])`` and transformers' ``get_*_schedule_with_warmup`` (``warmup_start = 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lrwatch.schedule.base import Curve, LineUnits, Param, Span, fmt, nonneg, unit_closed

WARMUP = Param("warmup", "span", ">= 0", nonneg, default=Span(0.0), quiet=True)
WARMUP_START = Param("warmup_start", "float", "in [0, 1]", unit_closed)


@dataclass(frozen=True)
class Warmup:
    """``inner`` after a linear warmup of ``length`` steps from ``start × lr0``."""

    inner: Curve
    length: float
    start: float = 0.0

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        out = np.empty_like(t)
        ramp = t < self.length
        out[ramp] = base_lr * (self.start + (1 - self.start) * t[ramp] / self.length)
        if (~ramp).any():
            out[~ramp] = self.inner.lr(base_lr, t[~ramp] - self.length)
        return out

    def scaled(self, ratio: float) -> Warmup:
        scaled = getattr(self.inner, "scaled", None)
        return Warmup(scaled(ratio) if scaled is not None else self.inner, self.length, self.start)


def warmup_line(line: str, values: dict[str, Any], units: LineUnits, transformers_line: str | None) -> str:
    """The line a user can paste for a kind with a warmup: the transformers call where that is the twin
    (a warmup from 0), else ``SequentialLR`` with ``LinearLR`` (``LambdaLR`` for a warmup from 0)."""
    warmup, start = values["warmup"], values["warmup_start"]
    w = units.t(warmup)
    if transformers_line is not None:
        return transformers_line
    ramp = (
        f"LinearLR(optimizer, start_factor={fmt(start)}, total_iters={w})"
        if start > 0
        else f"LambdaLR(optimizer, lambda t: t / {w})"
    )
    return f"SequentialLR(optimizer, [{ramp}, {line}], milestones=[{w}])"
