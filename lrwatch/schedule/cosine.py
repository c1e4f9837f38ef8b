"""Cosine annealing and cosine with warm restarts (SGDR): PyTorch's ``CosineAnnealingLR`` and
``CosineAnnealingWarmRestarts``; transformers' ``get_cosine_schedule_with_warmup`` with a warmup."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrwatch.schedule.base import Fit, Kind, LineUnits, Param, fmt, nonneg, positive

ETA_MIN = Param("eta_min", "float", ">= 0", nonneg, default=0.0, quiet=True)


@dataclass(frozen=True)
class CosineAnnealing:
    """``CosineAnnealingLR``: ``eta_min + ½(lr0 − eta_min)(1 + cos(π t / T_max))``.

    Past ``T_max`` the cosine rises again, as PyTorch's does.
    """

    T_max: float
    eta_min: float = 0.0
    kind: str = "cosine"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return self.eta_min + (base_lr - self.eta_min) * (1 + np.cos(np.pi * t / self.T_max)) / 2


@dataclass(frozen=True)
class CosineWarmRestarts:
    """``CosineAnnealingWarmRestarts`` (SGDR): cycle ``n`` lasts ``T_i = T_0 · T_mult^n``.

    ``lr(t) = eta_min + ½(lr0 − eta_min)(1 + cos(π T_cur / T_i))`` where ``T_cur`` is the time
    since the last restart, at ``T_0 (T_mult^n − 1) / (T_mult − 1)``. The cycle index is found
    exactly: PyTorch's ``int(math.log(...))`` can land one cycle short at a restart
    (e.g. ``T_mult=3`` at ``121·T_0``), where it gives ``eta_min`` instead of ``lr0``.
    """

    T_0: float
    T_mult: int = 1
    eta_min: float = 0.0
    kind: str = "cosine-restarts"

    def cycle_position(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(T_cur, T_i)`` for each time in ``t``."""
        t = np.asarray(t, dtype=np.float64)
        if self.T_mult == 1:
            return np.mod(t, self.T_0), np.full_like(t, self.T_0)
        m = float(self.T_mult)
        with np.errstate(divide="ignore", invalid="ignore"):
            n = np.floor(np.log(t / self.T_0 * (m - 1) + 1) / math.log(m))
        n = np.maximum(n, 0)
        # The logarithm can round across a restart either way; integer starts settle it.
        n = np.where(t >= self.T_0 * (m ** (n + 1) - 1) / (m - 1), n + 1, n)
        n = np.where((n > 0) & (t < self.T_0 * (m**n - 1) / (m - 1)), n - 1, n)
        start = self.T_0 * (m**n - 1) / (m - 1)
        return t - start, self.T_0 * m**n

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t_cur, t_i = self.cycle_position(t)
        return self.eta_min + (base_lr - self.eta_min) * (1 + np.cos(np.pi * t_cur / t_i)) / 2


def _eta(v: dict[str, Any]) -> str:
    return f", eta_min={fmt(v['eta_min'])}" if v["eta_min"] else ""


def _fit_cosine(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """``T_max`` = the rest of the run: one half cosine to its end."""
    return {} if "T_max" in values else {"T_max": fit.span(fit.rest("T_max"), up=True)}


def _fit_restarts(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """``T_0`` such that three cycles fill the rest: ``rest / (1 + T_mult + T_mult²)``."""
    if "T_0" in values:
        return {}
    m = values["T_mult"]
    return {"T_0": fit.span(fit.rest("T_0") / (1 + m + m * m), up=True)}


def _hf_cosine(v: dict[str, Any], u: LineUnits) -> str | None:
    if v["eta_min"] or v["warmup_start"]:
        return None
    w, total = u.t(v["warmup"]), fmt(float(u.t(v["warmup"])) + float(u.t(v["T_max"])))
    return f"get_cosine_schedule_with_warmup(optimizer, num_warmup_steps={w}, num_training_steps={total})"


COSINE = Kind(
    "cosine",
    (Param("T_max", "span", "> 0", positive), ETA_MIN),
    _fit_cosine,
    lambda v, fit: CosineAnnealing(fit.steps(v["T_max"]), v["eta_min"]),
    lambda v, u: f"CosineAnnealingLR(optimizer, T_max={u.t(v['T_max'])}{_eta(v)})",
    hf=_hf_cosine,
)

RESTARTS = Kind(
    "cosine-restarts",
    (
        Param("T_0", "span", "> 0", positive),
        Param("T_mult", "int", "an integer in [1, 1000]", lambda x: 1 <= x <= 1000, default=1, quiet=True),
        ETA_MIN,
    ),
    _fit_restarts,
    lambda v, fit: CosineWarmRestarts(fit.steps(v["T_0"]), v["T_mult"], v["eta_min"]),
    lambda v, u: (
        "CosineAnnealingWarmRestarts(optimizer, T_0="
        + u.t(v["T_0"])
        + (f", T_mult={v['T_mult']}" if v["T_mult"] != 1 else "")
        + f"{_eta(v)})"
    ),
)
