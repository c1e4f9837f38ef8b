"""Step decays: PyTorch's ``StepLR`` and ``MultiStepLR``."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from lrwatch.schedule.base import Fit, Kind, LineUnits, Param, SpecError, fmt, fmt_value, nonneg, positive
from lrwatch.schedule.exp import GAMMA

GAMMA_01 = Param("gamma", "float", "in (0, 1]", GAMMA.ok, default=0.1)


@dataclass(frozen=True)
class StepDecay:
    """``StepLR``: ``lr(t) = lr0 · gamma^⌊t / step_size⌋``."""

    step_size: float
    gamma: float = 0.1
    kind: str = "step"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return base_lr * np.power(self.gamma, np.floor(t / self.step_size))


@dataclass(frozen=True)
class MultiStep:
    """``MultiStepLR``: ``lr(t) = lr0 · gamma^(number of milestones ≤ t)``."""

    milestones: tuple[float, ...]
    gamma: float = 0.1
    kind: str = "multistep"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        milestones = np.asarray(self.milestones, dtype=np.float64)
        passed = np.searchsorted(milestones, np.asarray(t, dtype=np.float64), "right")
        return base_lr * np.power(self.gamma, passed)


def _fit_step(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """``step_size`` a third of the rest: the LR drops twice before the end."""
    return {} if "step_size" in values else {"step_size": fit.span(fit.rest("step_size") / 3)}


def _fit_multistep(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """Milestones at half and three quarters of the rest (the common 50% / 75% recipe)."""
    if "milestones" in values:
        return {}
    rest = fit.rest("milestones")
    return {"milestones": (fit.span(rest * 0.5), fit.span(rest * 0.75))}


def _check_milestones(values: dict[str, Any], fit: Fit) -> None:
    steps = [fit.steps(m) for m in values["milestones"]]
    if any(b <= a for a, b in pairwise(steps)):
        raise SpecError(f"multistep: milestones must increase (got {fmt_value(values['milestones'])})")


STEP = Kind(
    "step",
    (Param("step_size", "span", "> 0", positive), GAMMA_01),
    _fit_step,
    lambda v, fit: StepDecay(fit.steps(v["step_size"]), v["gamma"]),
    lambda v, u: f"StepLR(optimizer, step_size={u.t(v['step_size'])}, gamma={fmt(v['gamma'])})",
)


def _multistep_line(v: dict[str, Any], u: LineUnits) -> str:
    milestones = ", ".join(u.t(m) for m in v["milestones"])
    return f"MultiStepLR(optimizer, milestones=[{milestones}], gamma={fmt(v['gamma'])})"


MULTISTEP = Kind(
    "multistep",
    (Param("milestones", "spans", ">= 0", nonneg), GAMMA_01),
    _fit_multistep,
    lambda v, fit: MultiStep(tuple(fit.steps(m) for m in v["milestones"]), v["gamma"]),
    _multistep_line,
    checks=(_check_milestones,),
)
