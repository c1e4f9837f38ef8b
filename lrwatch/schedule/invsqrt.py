"""Inverse square root decay: transformers' ``get_inverse_sqrt_schedule`` (big_vision's ``rsqrt``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lrwatch.schedule.base import Fit, Kind, LineUnits, Param, Span, positive


@dataclass(frozen=True)
class InverseSqrt:
    """``lr(t) = lr0 / √((t + timescale) / timescale)``, ``t`` counted from the end of the warmup."""

    timescale: float
    kind: str = "inverse-sqrt"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return base_lr * (1.0 / np.sqrt((t + self.timescale) / self.timescale))


def _fit(values: dict[str, Any], fit: Fit) -> dict[str, Any]:
    """transformers' default: ``timescale`` = the warmup's length, else 10,000 steps."""
    if "timescale" in values:
        return {}
    warmup = values["warmup"]
    return {"timescale": warmup if warmup.value > 0 else Span(10_000.0, steps=True)}


def _torch_line(v: dict[str, Any], u: LineUnits) -> str:
    return f"LambdaLR(optimizer, lambda t: ((t + {u.t(v['timescale'])}) / {u.t(v['timescale'])}) ** -0.5)"


def _hf(v: dict[str, Any], u: LineUnits) -> str | None:
    if v["warmup_start"]:
        return None
    return f"get_inverse_sqrt_schedule(optimizer, num_warmup_steps={u.t(v['warmup'])}, timescale={u.t(v['timescale'])})"


INVERSE_SQRT = Kind(
    "inverse-sqrt",
    (Param("timescale", "span", "> 0", positive),),
    _fit,
    lambda v, fit: InverseSqrt(fit.steps(v["timescale"])),
    lambda v, u: _hf(v, u) or _torch_line(v, u),
    hf=_hf,
    group="ratio",
    transformers=True,
)
