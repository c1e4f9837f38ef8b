"""The 1cycle policy: PyTorch's ``OneCycleLR`` (the LR only: lrwatch leaves momentum alone, so the twin is
``OneCycleLR(..., cycle_momentum=False)``), with ``max_lr`` = the segment's starting LR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lrwatch.schedule.base import Fit, Kind, LineUnits, Param, SpecError, fmt, positive


@dataclass(frozen=True)
class OneCycle:
    """``OneCycleLR``'s phases over ``total_steps``: from ``max_lr / div_factor`` up to ``max_lr`` until step
    ``pct_start · total_steps − 1``, then down to ``max_lr / div_factor / final_div_factor`` at step
    ``total_steps − 1`` (``three_phase``: back to the start first, at ``2 · pct_start · total_steps − 2``), each
    phase annealed by ``cos`` (``end + (start − end)/2 · (1 + cos(π pct))``) or ``linear``. After its last step
    (where ``OneCycleLR`` raises) the LR stays at its final value."""

    total_steps: float
    pct_start: float = 0.3
    anneal: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    kind: str = "onecycle"

    def phases(self, max_lr: float) -> list[tuple[float, float, float]]:
        """``(end_step, start_lr, end_lr)`` of each phase, as ``OneCycleLR`` builds them."""
        initial = max_lr / self.div_factor
        final = initial / self.final_div_factor
        up = float(self.pct_start * self.total_steps) - 1
        if self.three_phase:
            down = float(2 * self.pct_start * self.total_steps) - 2
            return [(up, initial, max_lr), (down, max_lr, initial), (self.total_steps - 1, initial, final)]
        return [(up, initial, max_lr), (self.total_steps - 1, max_lr, final)]

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        phases = self.phases(base_lr)
        out = np.full(t.shape, phases[-1][2])  # after the last step: its final LR
        todo = t <= phases[-1][0]
        start_step = 0.0
        for i, (end_step, start, end) in enumerate(phases):
            here = todo & ((t <= end_step) | (i == len(phases) - 1))
            if here.any():
                with np.errstate(divide="ignore", invalid="ignore"):
                    pct = (t[here] - start_step) / (end_step - start_step)
                if self.anneal == "cos":
                    out[here] = end + (start - end) / 2.0 * (np.cos(np.pi * pct) + 1)
                else:
                    out[here] = (end - start) * pct + start
            todo &= ~here
            start_step = end_step
        return out


def _fit(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """``total_steps`` = the rest of the run (after a warmup)."""
    return {} if "total_steps" in values else {"total_steps": fit.span(fit.rest("total_steps"), up=True)}


def _check(values: dict[str, Any], fit: Fit) -> None:
    """The warm-up phase must span more than one step (``OneCycleLR`` divides by its length)."""
    if values["pct_start"] * fit.steps(values["total_steps"]) <= 1:
        raise SpecError(f"onecycle: pct_start × total_steps must be > 1 step (got {fmt(values['pct_start'])} × "
                        f"{values['total_steps']})")  # fmt: skip


def _line(v: dict[str, Any], u: LineUnits) -> str:
    extra = ""
    for key, torch_key, default in (("pct_start", "pct_start", 0.3), ("div_factor", "div_factor", 25.0),
                                    ("final_div_factor", "final_div_factor", 1e4)):  # fmt: skip
        if v[key] != default:
            extra += f", {torch_key}={fmt(v[key])}"
    if v["anneal"] != "cos":
        extra += f", anneal_strategy='{v['anneal']}'"
    if v["three_phase"]:
        extra += ", three_phase=True"
    return f"OneCycleLR(optimizer, max_lr=lr, total_steps={u.t(v['total_steps'])}{extra}, cycle_momentum=False)"


ONECYCLE = Kind(
    "onecycle",
    (
        Param("total_steps", "span", "> 0", positive),
        Param("pct_start", "float", "in (0, 1)", lambda x: 0 < x < 1, default=0.3, quiet=True),
        Param("anneal", "choice", choices=("cos", "linear"), default="cos", quiet=True),
        Param("div_factor", "float", "> 0", positive, default=25.0, quiet=True),
        Param("final_div_factor", "float", "> 0", positive, default=1e4, quiet=True),
        Param("three_phase", "bool", default=False, quiet=True),
    ),
    _fit,
    lambda v, fit: OneCycle(
        fit.steps(v["total_steps"]),
        v["pct_start"],
        v["anneal"],
        v["div_factor"],
        v["final_div_factor"],
        v["three_phase"],
    ),
    _line,
    group="same",
    checks=(_check,),
)
