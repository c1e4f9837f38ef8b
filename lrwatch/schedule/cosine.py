"""Cosine annealing and cosine with warm restarts (SGDR): PyTorch's ``CosineAnnealingLR`` and
``CosineAnnealingWarmRestarts``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrwatch.schedule.base import params_of, torch_args


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

    def params(self) -> dict[str, float]:
        return params_of(self)

    def torch_line(self) -> str:
        return f"CosineAnnealingLR(optimizer, {torch_args(self)})"


@dataclass(frozen=True)
class CosineWarmRestarts:
    """``CosineAnnealingWarmRestarts`` (SGDR): cycle ``n`` lasts ``T_i = T_0 · T_mult^n`` epochs.

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
        """``(T_cur, T_i)`` for each epoch in ``t``."""
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

    def params(self) -> dict[str, float]:
        return params_of(self)

    def torch_line(self) -> str:
        return f"CosineAnnealingWarmRestarts(optimizer, {torch_args(self)})"
