"""Constant, linear and polynomial schedules: PyTorch's ``ConstantLR(factor=1)``, ``LinearLR`` and
``PolynomialLR``; transformers' ``get_constant_schedule``, linear decay to 0 and
``get_polynomial_decay_schedule_with_warmup``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lrwatch.schedule.base import Fit, Kind, LineUnits, Param, fmt, positive, unit_closed, unit_open_closed
from lrwatch.schedule.cosine import ETA_MIN


@dataclass(frozen=True)
class Constant:
    """``lr(t) = lr0``."""

    kind: str = "constant"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), float(base_lr))


@dataclass(frozen=True)
class Linear:
    """``LinearLR``: ``lr(t) = lr0 · (start_factor + (end_factor − start_factor) · min(t, T) / T)``, ``T`` its
    ``total_iters``."""

    total_iters: float
    start_factor: float = 1.0
    end_factor: float = 0.0
    kind: str = "linear"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.minimum(np.asarray(t, dtype=np.float64), self.total_iters)
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * t / self.total_iters)


@dataclass(frozen=True)
class Polynomial:
    """``PolynomialLR`` (with transformers' ``lr_end`` as ``eta_min``):
    ``lr(t) = eta_min + (lr0 − eta_min) · (1 − min(t, total_iters) / total_iters)^power``."""

    total_iters: float
    power: float = 1.0
    eta_min: float = 0.0
    kind: str = "poly"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.minimum(np.asarray(t, dtype=np.float64), self.total_iters)
        return self.eta_min + (base_lr - self.eta_min) * (1 - t / self.total_iters) ** self.power

    def scaled(self, ratio: float) -> Polynomial:
        """transformers' rule per param group: ``lr_end`` is a fraction of the LR, so it scales with each group's."""
        return replace(self, eta_min=self.eta_min * ratio)


def _fit_rest(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """``total_iters`` = the rest of the run (after the warmup)."""
    return {} if "total_iters" in values else {"total_iters": fit.span(fit.rest("total_iters"), up=True)}


def _total(v: dict[str, Any], u: LineUnits) -> str:
    return fmt(float(u.t(v["warmup"])) + float(u.t(v["total_iters"])))


CONSTANT = Kind(
    "constant",
    (),
    lambda v, fit: {},
    lambda v, fit: Constant(),
    lambda v, u: "ConstantLR(optimizer, factor=1.0)",
    hf=lambda v, u: None if v["warmup_start"] else f"get_constant_schedule_with_warmup(optimizer, {u.t(v['warmup'])})",
)


def _linear_line(v: dict[str, Any], u: LineUnits) -> str:
    return (f"LinearLR(optimizer, start_factor={fmt(v['start_factor'])}, end_factor={fmt(v['end_factor'])}, "
            f"total_iters={u.t(v['total_iters'])})")  # fmt: skip


def _hf_linear(v: dict[str, Any], u: LineUnits) -> str | None:
    if v["warmup_start"] or v["start_factor"] != 1 or v["end_factor"] != 0:
        return None
    return f"get_linear_schedule_with_warmup(optimizer, {u.t(v['warmup'])}, num_training_steps={_total(v, u)})"


LINEAR = Kind(
    "linear",
    (
        Param("start_factor", "float", "in (0, 1]", unit_open_closed, default=1.0, quiet=True),
        Param("end_factor", "float", "in [0, 1]", unit_closed, default=0.0, quiet=True),
        Param("total_iters", "span", "> 0", positive),
    ),
    _fit_rest,
    lambda v, fit: Linear(fit.steps(v["total_iters"]), v["start_factor"], v["end_factor"]),
    _linear_line,
    hf=_hf_linear,
)


def _poly_line(v: dict[str, Any], u: LineUnits) -> str:
    line = f"PolynomialLR(optimizer, total_iters={u.t(v['total_iters'])}, power={fmt(v['power'])})"
    if v["eta_min"]:
        return f"get_polynomial_decay_schedule_with_warmup(optimizer, 0, {_total(v, u)}, " \
               f"lr_end={fmt(v['eta_min'])}, power={fmt(v['power'])})"  # fmt: skip
    return line


def _hf_poly(v: dict[str, Any], u: LineUnits) -> str | None:
    if v["warmup_start"]:
        return None
    return (f"get_polynomial_decay_schedule_with_warmup(optimizer, {u.t(v['warmup'])}, {_total(v, u)}, "
            f"lr_end={fmt(v['eta_min'])}, power={fmt(v['power'])})")  # fmt: skip


POLY = Kind(
    "poly",
    (
        Param("total_iters", "span", "> 0", positive),
        Param("power", "float", "> 0", positive, default=1.0, quiet=True),
        ETA_MIN,
    ),
    _fit_rest,
    lambda v, fit: Polynomial(fit.steps(v["total_iters"]), v["power"], v["eta_min"]),
    _poly_line,
    hf=_hf_poly,
    group="ratio",
)
