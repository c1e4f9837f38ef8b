"""What every schedule kind shares: the :class:`Schedule` protocol, the one-line :class:`SpecError`,
parameter checks (:class:`Param`) and number formatting for specs and PyTorch lines."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

ANCHORS = ("continue", "base")


class SpecError(ValueError):
    """A schedule spec that does not parse or validate; the message is one line for the user."""


class Schedule(Protocol):
    kind: str

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict[str, float]: ...

    def torch_line(self) -> str: ...


def fmt(value: float) -> str:
    """Shortest text that reads back to the same float: ``10``, ``0.001``, ``1e-5``."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


# Parameters equal to these are left out of printed specs and PyTorch lines, as PyTorch's own defaults.
QUIET_DEFAULTS = {"decay_steps": 1.0, "eta_min": 0.0, "T_mult": 1}


def params_of(schedule: object) -> dict[str, float]:
    return {f.name: getattr(schedule, f.name) for f in fields(schedule) if f.name != "kind"}  # type: ignore[arg-type]


def shown_params(schedule: Schedule) -> dict[str, float]:
    return {k: v for k, v in schedule.params().items() if QUIET_DEFAULTS.get(k, None) != v}


def torch_args(schedule: Schedule) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in shown_params(schedule).items())


@dataclass(frozen=True)
class Param:
    name: str
    check: str  # one of: "gamma", "positive", "nonneg", "int>=1"
    help: str

    def validate(self, kind: str, value: float) -> float:
        ok = {
            "gamma": 0 < value <= 1,
            "positive": value > 0,
            "nonneg": value >= 0,
            "int>=1": value >= 1 and float(value).is_integer() and value <= 1000,
        }[self.check]
        if not ok or not math.isfinite(value):
            raise SpecError(f"{kind}: {self.name} must be {self.help} (got {fmt_any(value)})")
        return int(value) if self.check == "int>=1" else float(value)


def fmt_any(value: float) -> str:
    return fmt(value) if math.isfinite(value) else str(value)
