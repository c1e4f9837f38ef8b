"""Exponential decay: PyTorch's ``ExponentialLR``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lrwatch.schedule.base import (
    Fit,
    Kind,
    LineUnits,
    Param,
    Span,
    fmt,
    one_minus_sig,
    positive,
    round_sig,
    unit_open_closed,
)


@dataclass(frozen=True)
class ExponentialDecay:
    """``ExponentialLR``: ``lr(t) = lr0 · gamma^(t / decay_steps)``; ``decay_steps`` = one epoch is PyTorch's form."""

    gamma: float
    decay_steps: float = 1.0
    kind: str = "exp"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        return base_lr * np.power(self.gamma, np.asarray(t, dtype=np.float64) / self.decay_steps)


GAMMA = Param("gamma", "float", "in (0, 1]", unit_open_closed)


def _fit(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """``gamma`` reaching 1% of the starting LR at the end of the run, to 4 significant digits (of 1 − gamma when
    gamma is close to 1: a per-step gamma of a long run is 0.99995, not 1)."""
    if "gamma" in values:
        return {}
    gamma = 0.01 ** (fit.steps(values["decay_steps"]) / fit.rest("gamma"))
    return {"gamma": min(1.0, round_sig(gamma) if gamma < 0.5 else one_minus_sig(1 - gamma))}


def _line(v: dict[str, Any], u: LineUnits) -> str:
    per = v["decay_steps"]
    if per == Span(1.0) and not u.steps:
        return f"ExponentialLR(optimizer, gamma={fmt(v['gamma'])})"
    n = float(u.t(per))
    return f"ExponentialLR(optimizer, gamma={fmt(v['gamma'] ** (1.0 / n))})  # {fmt(v['gamma'])}**(1/{fmt(n)})"


EXP = Kind(
    "exp",
    (GAMMA, Param("decay_steps", "span", "> 0", positive, default=Span(1.0), quiet=True)),
    _fit,
    lambda v, fit: ExponentialDecay(v["gamma"], fit.steps(v["decay_steps"])),
    _line,
)
