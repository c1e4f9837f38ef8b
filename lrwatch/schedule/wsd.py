"""Warmup–stable–decay: transformers' ``get_wsd_schedule``, and ``cooldown``, its decay phase switched in live
(Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations": train at a
constant LR, and cool down whenever the budget is known; ``1-sqrt`` cools down best)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lrwatch.schedule.base import Fit, Kind, LineUnits, Param, Span, fmt, nonneg, positive, unit_closed
from lrwatch.schedule.cosine import ETA_MIN

SHAPES = ("1-sqrt", "linear", "cosine")


def decay_shape(shape: str, x: np.ndarray) -> np.ndarray:
    """``s(x)`` for ``x`` in [0, 1]: ``1 − √x``, ``1 − x``, or ``½(1 + cos πx)`` (transformers' ``decay_type``)."""
    if shape == "1-sqrt":
        return 1.0 - np.sqrt(x)
    if shape == "linear":
        return 1.0 - x
    return 0.5 * (1.0 + np.cos(np.pi * x))


@dataclass(frozen=True)
class WarmupStableDecay:
    """After its warmup: ``lr0`` for ``stable`` steps, then ``lr0 · (s(p) · (1 − m) + m)`` over ``decay`` steps
    (``p`` the decay's progress, ``m = min_lr_ratio``), then ``m · lr0``."""

    stable: float
    decay: float
    decay_type: str = "1-sqrt"
    min_lr_ratio: float = 0.0
    kind: str = "wsd"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        progress = np.clip((t - self.stable) / max(1.0, self.decay), 0.0, 1.0)
        factor = decay_shape(self.decay_type, progress) * (1.0 - self.min_lr_ratio) + self.min_lr_ratio
        factor = np.where(t < self.stable, 1.0, np.maximum(0.0, factor))
        factor = np.where(t >= self.stable + self.decay, self.min_lr_ratio, factor)
        return base_lr * factor


@dataclass(frozen=True)
class Cooldown:
    """From the LR in force ``L``: ``lr(t) = eta_min + (L − eta_min) · s(t / length)`` for ``t < length``; the
    run ends after its last step. Equal to transformers' WSD decay phase from ``L``."""

    length: float
    shape: str = "1-sqrt"
    eta_min: float = 0.0
    kind: str = "cooldown"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        x = np.clip(np.asarray(t, dtype=np.float64) / self.length, 0.0, 1.0)
        return self.eta_min + (base_lr - self.eta_min) * decay_shape(self.shape, x)

    def scaled(self, ratio: float) -> Cooldown:
        """transformers' rule per param group (one factor for every group): ``eta_min`` scales with the LR."""
        return replace(self, eta_min=self.eta_min * ratio)


def _fit_wsd(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """``decay`` = 20% of the run from the segment's start, its warmup included (Hägele et al.: a cooldown of 20%
    of the training steps), ``stable`` = what remains after the warmup; the warmup starts at ``min_lr_ratio``."""
    out: dict[str, Any] = {}
    if "warmup_start" not in values:
        out["warmup_start"] = values["min_lr_ratio"]
    if "decay" in values and "stable" in values:
        return out
    rest = fit.rest("stable" if "decay" in values else "decay")
    decay = values.get("decay") or fit.span(0.2 * (rest + fit.warmup_steps))
    out["decay"] = decay
    if "stable" not in values:
        left = rest - fit.steps(decay)
        out["stable"] = fit.span(left, up=True) if left > 0 else Span(0.0, fit.in_steps)
    return out


def _wsd_line(v: dict[str, Any], u: LineUnits) -> str:
    line = (f"get_wsd_schedule(optimizer, num_warmup_steps={u.t(v['warmup'])}, num_decay_steps={u.t(v['decay'])}, "
            f"num_stable_steps={u.t(v['stable'])}, decay_type='{v['decay_type']}'")  # fmt: skip
    line += f", min_lr_ratio={fmt(v['min_lr_ratio'])})" if v["min_lr_ratio"] else ")"
    if v["warmup"].value and v["warmup_start"] != v["min_lr_ratio"]:
        line += f"  # warmup from {fmt(v['warmup_start'])}×lr"
    return line


WSD = Kind(
    "wsd",
    (
        Param("decay", "span", "> 0", positive),
        Param("stable", "span", ">= 0", nonneg),
        Param("decay_type", "choice", choices=SHAPES, default="1-sqrt", quiet=True),
        Param("min_lr_ratio", "float", "in [0, 1]", unit_closed, default=0.0, quiet=True),
    ),
    _fit_wsd,
    lambda v, fit: WarmupStableDecay(fit.steps(v["stable"]), fit.steps(v["decay"]), v["decay_type"], v["min_lr_ratio"]),
    _wsd_line,
    hf=_wsd_line,
    group="ratio",
    transformers=True,
)


def _fit_cooldown(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """``length`` = a quarter of the steps done so far, so that the cooldown is the last 20% of the run it ends
    (Hägele et al.'s recommended share), and no longer than the rest of the run when that is known."""
    if "length" in values:
        return {}
    steps = max(1, math.ceil(fit.start_step / 4))
    if fit.remaining_steps is not None:
        steps = max(1, min(steps, math.floor(fit.remaining_steps)))
    return {"length": Span(float(steps), steps=True)}


def _cooldown_line(v: dict[str, Any], u: LineUnits) -> str:
    ratio = f", min_lr_ratio={fmt(v['eta_min'])}/lr" if v["eta_min"] else ""
    return (f"get_wsd_schedule(optimizer, 0, num_decay_steps={u.t(v['length'])}, num_stable_steps=0, "
            f"decay_type='{v['shape']}'{ratio})  # then the run ends")  # fmt: skip


COOLDOWN = Kind(
    "cooldown",
    (
        Param("length", "span", "> 0", positive),
        Param("shape", "choice", choices=SHAPES, default="1-sqrt", quiet=True),
        ETA_MIN,
    ),
    _fit_cooldown,
    lambda v, fit: Cooldown(fit.steps(v["length"]), v["shape"], v["eta_min"]),
    _cooldown_line,
    group="ratio",
    warmup=False,
    transformers=True,
)
