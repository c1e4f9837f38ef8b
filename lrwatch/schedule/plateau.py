"""Reduce on plateau: PyTorch's ``ReduceLROnPlateau``, driven by a validation metric.

The curve is flat at the level in force: ``reduced`` reductions from the segment's LR, each
``new = max(old · factor, min_lr)``, skipped when ``old − new ≤ eps`` (1e-8), as PyTorch's ``_reduce_lr``
does per param group. When the next reduction comes depends on the metric, so the preview cannot know it:
the run (:class:`PlateauState`, fed by ``monitor.epoch_end(val_loss=...)``) decides, and logs each reduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lrwatch.schedule.base import Kind, LineUnits, Param, fmt, nonneg

EPS = 1e-8


@dataclass(frozen=True)
class Plateau:
    """The LR after ``reduced`` reductions of ``lr0``, flat."""

    factor: float = 0.1
    min_lr: float = 0.0
    reduced: int = 0
    kind: str = "plateau"

    def level(self, base_lr: float) -> float:
        lr = float(base_lr)
        for _ in range(self.reduced):
            new = max(lr * self.factor, self.min_lr)
            if lr - new > EPS:
                lr = new
        return lr

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        return np.full(np.shape(t), self.level(base_lr))


@dataclass
class PlateauState:
    """``ReduceLROnPlateau.step(metric)``'s bookkeeping (best, bad evaluations, cooldown), without the LR:
    :meth:`observe` says whether this evaluation reduces it."""

    mode: str = "min"
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    patience: int = 10
    cooldown: int = 0
    best: float = math.inf
    num_bad_epochs: int = 0
    cooldown_counter: int = 0

    @classmethod
    def of(cls, values: dict[str, Any]) -> PlateauState:
        keys = ("mode", "threshold", "threshold_mode", "patience", "cooldown")
        state = cls(**{k: values[k] for k in keys})
        state.best = math.inf if state.mode == "min" else -math.inf
        return state

    def is_better(self, a: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold)
        if self.mode == "min":
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def observe(self, metric: float) -> bool:
        """One evaluation; ``True``: reduce the LR now."""
        current = float(metric)
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
            return True
        return False

    def to_dict(self) -> dict[str, float]:
        return {"best": self.best, "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter}

    def load(self, data: dict[str, Any]) -> None:
        self.best = float(data["best"])
        self.num_bad_epochs = int(data["num_bad_epochs"])
        self.cooldown_counter = int(data["cooldown_counter"])


def _line(v: dict[str, Any], u: LineUnits) -> str:
    args = ""
    for key, default in (("mode", "min"), ("factor", 0.1), ("patience", 10), ("threshold", 1e-4),
                         ("threshold_mode", "rel"), ("cooldown", 0), ("min_lr", 0.0)):  # fmt: skip
        if v[key] != default:
            args += f", {key}={v[key]!r}" if isinstance(v[key], str) else f", {key}={fmt(v[key])}"
    return f"ReduceLROnPlateau(optimizer{args})  # scheduler.step({v['metric']}) at each evaluation"


PLATEAU = Kind(
    "plateau",
    (
        Param("factor", "float", "in (0, 1)", lambda x: 0 < x < 1, default=0.1, quiet=True),
        Param("patience", "int", "an integer >= 0", nonneg, default=10, quiet=True),
        Param("threshold", "float", ">= 0", nonneg, default=1e-4, quiet=True),
        Param("threshold_mode", "choice", choices=("rel", "abs"), default="rel", quiet=True),
        Param("cooldown", "int", "an integer >= 0", nonneg, default=0, quiet=True),
        Param("min_lr", "float", ">= 0", nonneg, default=0.0, quiet=True),
        Param("mode", "choice", choices=("min", "max"), default="min", quiet=True),
        Param("metric", "name", default="val_loss", quiet=True),
        Param("reduced", "int", "an integer >= 0", nonneg, default=0, quiet=True),
    ),
    lambda v, fit: {},
    lambda v, fit: Plateau(v["factor"], v["min_lr"], v["reduced"]),
    _line,
)
