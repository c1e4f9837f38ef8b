"""Exponential decay: PyTorch's ``ExponentialLR``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lrwatch.schedule.base import fmt, params_of


@dataclass(frozen=True)
class ExponentialDecay:
    """``ExponentialLR``: ``lr(t) = lr0 · gamma^(t / decay_steps)``; ``decay_steps = 1`` is PyTorch's form."""

    gamma: float
    decay_steps: float = 1.0
    kind: str = "exp"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        return base_lr * np.power(self.gamma, np.asarray(t, dtype=np.float64) / self.decay_steps)

    def params(self) -> dict[str, float]:
        return params_of(self)

    def torch_line(self) -> str:
        if self.decay_steps == 1:
            return f"ExponentialLR(optimizer, gamma={fmt(self.gamma)})"
        per_epoch = self.gamma ** (1.0 / self.decay_steps)
        return f"ExponentialLR(optimizer, gamma={fmt(per_epoch)})  # {fmt(self.gamma)}**(1/{fmt(self.decay_steps)})"
