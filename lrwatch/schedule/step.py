"""Step decay: PyTorch's ``StepLR``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lrwatch.schedule.base import params_of, torch_args


@dataclass(frozen=True)
class StepDecay:
    """``StepLR``: ``lr(t) = lr0 · gamma^⌊t / step_size⌋``."""

    step_size: float
    gamma: float = 0.1
    kind: str = "step"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return base_lr * np.power(self.gamma, np.floor(t / self.step_size))

    def params(self) -> dict[str, float]:
        return params_of(self)

    def torch_line(self) -> str:
        return f"StepLR(optimizer, {torch_args(self)})"
