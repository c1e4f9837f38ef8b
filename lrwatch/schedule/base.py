"""What every schedule kind shares: the one-line :class:`SpecError`, time as a :class:`Span` (epochs, or
optimizer steps written ``Nsteps``), a key's parsing and range (:class:`Param`), what a fitted default knows
of the run (:class:`Fit`), a kind's description (:class:`Kind`) and number formatting.

Every curve is a closed form of ``t``, the optimizer steps since its segment's origin (a float array), so a
key given in steps is exact at its own steps and a key given in epochs is ``epochs × steps_per_epoch`` steps.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import pairwise
from typing import Any, Protocol, Union

import numpy as np

ANCHORS = ("continue", "base")


class SpecError(ValueError):
    """A schedule spec that does not parse or validate; the message is one line for the user."""


class LengthUnknown(SpecError):
    """A default fitted to the rest of the run, in a run whose length is unknown: the message names the key
    (``key``) and how to give the length."""

    def __init__(self, kind: str, key: str) -> None:
        super().__init__(
            f"{kind}: {key} is fitted to the rest of the run, whose length is unknown: give {key}=..., "
            "or the length (lrwatch send RUN_DIR length N, --total-steps N, watch(total_steps=N))"
        )
        self.kind, self.key = kind, key


class Curve(Protocol):
    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray: ...


def fmt(value: float) -> str:
    """Shortest text that reads back to the same float: ``10``, ``0.001``, ``1e-5``."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    text = repr(float(value))
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def fmt_any(value: float) -> str:
    return fmt(value) if math.isfinite(value) else str(value)


@dataclass(frozen=True)
class Span:
    """A length of time: ``value`` epochs (written ``40``), or ``value`` optimizer steps (``5000steps``)."""

    value: float
    steps: bool = False

    def __str__(self) -> str:
        return f"{fmt_any(self.value)}steps" if self.steps else fmt_any(self.value)

    def to_steps(self, steps_per_epoch: int) -> float:
        """In optimizer steps; ``epochs × steps_per_epoch`` snapped to a whole step within 1e-9 (0.1 × 30 is 3)."""
        if self.steps:
            return float(self.value)
        x = self.value * steps_per_epoch
        whole = round(x)
        return float(whole) if abs(x - whole) <= 1e-9 * max(1.0, abs(x)) else x


_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|nan)"
_SPAN = re.compile(rf"^({_NUMBER})(steps?)?$")


def parse_span(text: str) -> Span | None:
    """``40`` → 40 epochs, ``5000steps`` → 5000 steps; ``None`` if it is neither."""
    match = _SPAN.match(text.strip())
    if match is None:
        return None
    return Span(float(match.group(1)), steps=match.group(2) is not None)


Value = Union[float, int, bool, str, Span, tuple]  # noqa: UP007 (a runtime alias)


def fmt_value(value: Value) -> str:
    """A value in spec notation: ``1``/``0`` for booleans, ``30/60/90`` for a list of spans."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, tuple):
        return "/".join(str(v) for v in value)
    if isinstance(value, (Span, str)):
        return str(value)
    return fmt_any(value)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
TRUE, FALSE = ("1", "true", "True"), ("0", "false", "False")


@dataclass(frozen=True)
class Param:
    """One key of a kind: its type, its range (``ok``) and the range as the error message says it.

    Types: ``float``, ``int``, ``span`` (epochs or ``Nsteps``), ``spans`` (``30/60/90``), ``choice``,
    ``bool`` (``0``/``1``, ``true``/``false`` accepted), ``name`` (an identifier). ``default`` is the value
    a spec that leaves the key out gets (``None``: fitted, or the kind decides); ``quiet`` leaves the key out
    of printed specs when it has its default.
    """

    name: str
    type: str
    help: str = ""
    ok: Callable[[float], bool] | None = None
    choices: tuple[str, ...] = ()
    default: Any = None
    quiet: bool = False

    def parse(self, kind: str, raw: str) -> Value:
        """``raw`` (spec text) → a valid value; :class:`SpecError` naming the key and its range if not."""
        raw = raw.strip()
        if self.type == "choice":
            if raw not in self.choices:
                raise SpecError(f"{kind}: {self.name} must be one of {', '.join(self.choices)} (got {raw[:40]!r})")
            return raw
        if self.type == "name":
            if not _NAME.match(raw):
                raise SpecError(f"{kind}: {self.name} must be a metric's name, e.g. val_loss (got {raw[:40]!r})")
            return raw
        if self.type == "bool":
            if raw not in TRUE + FALSE:
                raise SpecError(f"{kind}: {self.name} must be 0 or 1 (true or false) (got {raw[:40]!r})")
            return raw in TRUE
        if self.type in ("span", "spans"):
            parts = raw.split("/") if self.type == "spans" else [raw]
            spans = [parse_span(p) for p in parts]
            if any(s is None for s in spans) or not parts:
                what = "a list of epochs or Nsteps, e.g. 30/60/90" if self.type == "spans" else "epochs or Nsteps"
                raise SpecError(f"{kind}: {self.name} must be {what} (got {raw[:40]!r})")
            return self.validate(kind, tuple(spans) if self.type == "spans" else spans[0])
        try:
            number = float(raw)
        except ValueError:
            raise SpecError(f"{kind}: {self.name} must be a number (got {raw[:40]!r})") from None
        return self.validate(kind, number)

    def coerce(self, kind: str, value: Any) -> Value:
        """A value from an edit (a number, or spec text) → a valid value."""
        if isinstance(value, str):
            return self.parse(kind, value)
        if isinstance(value, (Span, tuple)) or (isinstance(value, bool) and self.type == "bool"):
            return self.validate(kind, value)
        if self.type in ("span", "spans", "bool", "choice", "name"):
            return self.parse(kind, fmt_any(float(value)))
        return self.validate(kind, float(value))

    def validate(self, kind: str, value: Any) -> Value:
        if self.type == "spans":
            for span in value:
                self._check(kind, span.value, str(span))
            same_unit = len({s.steps for s in value}) == 1
            if same_unit and any(b.value <= a.value for a, b in pairwise(value)):
                raise SpecError(f"{kind}: {self.name} must increase (got {fmt_value(value)})")
            return tuple(value)
        if self.type == "span":
            self._check(kind, value.value, str(value))
            return value
        if self.type in ("bool", "choice", "name"):
            return value
        self._check(kind, value, fmt_any(value))
        if self.type == "int":
            if not float(value).is_integer():
                raise SpecError(f"{kind}: {self.name} must be {self.help} (got {fmt_any(value)})")
            return int(value)
        return float(value)

    def _check(self, kind: str, number: float, shown: str) -> None:
        if not math.isfinite(number) or (self.ok is not None and not self.ok(number)):
            raise SpecError(f"{kind}: {self.name} must be {self.help} (got {shown})")


def positive(x: float) -> bool:
    return x > 0


def nonneg(x: float) -> bool:
    return x >= 0


def unit_open_closed(x: float) -> bool:
    return 0 < x <= 1


def unit_closed(x: float) -> bool:
    return 0 <= x <= 1


@dataclass(frozen=True)
class Fit:
    """What a default fitted to the run knows: the clock (steps per epoch), where the segment starts, how many
    steps remain from there (``None``: the run's length is unknown), whether fitted times are written in
    steps (a run without epochs, or a spec that gave a time in steps) and the warmup before the kind's clock."""

    kind: str = ""
    steps_per_epoch: int = 1
    start_step: int = 0
    remaining_steps: float | None = None
    in_steps: bool = False
    warmup_steps: float = 0.0

    def steps(self, span: Span) -> float:
        return span.to_steps(self.steps_per_epoch)

    def rest(self, key: str) -> float:
        """The steps from the end of the warmup to the end of the run; :class:`LengthUnknown` if unknown."""
        if self.remaining_steps is None:
            raise LengthUnknown(self.kind, key)
        return max(self.remaining_steps - self.warmup_steps, 1e-9)

    def span(self, steps: float, *, up: bool = False) -> Span:
        """``steps`` as a fitted time in the run's unit: whole steps, or epochs at 4 significant digits
        (rounded up with ``up``, so that a cycle fitted to the run never ends before it)."""
        if self.in_steps:
            return Span(float(max(1, math.ceil(steps - 1e-9) if up else round(steps))), steps=True)
        epochs = steps / self.steps_per_epoch
        if abs(epochs - round(epochs)) <= 1e-9 * max(1.0, epochs):
            return Span(float(round(epochs)))  # whole epochs stay exact, however many
        digits = max(4, len(str(int(epochs))) + 2)  # 4 significant digits, and 2 decimals past 1000 epochs
        return Span(round_sig(ceil_sig(epochs, digits) if up else epochs, digits))


def round_sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def one_minus_sig(gap: float, digits: int = 4) -> float:
    """``1 − gap`` with ``gap`` rounded at ``digits`` significant digits, as the decimal it reads (``0.7929``,
    not the ``0.7928999999999999`` that float subtraction gives; ``0.99995`` keeps its digits)."""
    return float(Decimal(1) - Decimal(f"{gap:.{digits}g}"))


def ceil_sig(value: float, digits: int = 4) -> float:
    """``value`` rounded up at ``digits`` significant digits."""
    if value <= 0:
        return value
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / scale - 1e-9) * scale


class LineUnits:
    """How a PyTorch (or transformers) line writes times: in epochs, or in steps with a note."""

    def __init__(self, steps_per_epoch: int, steps: bool) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.steps = steps

    def t(self, span: Span) -> str:
        return fmt(span.to_steps(self.steps_per_epoch)) if self.steps else fmt(span.value)


@dataclass(frozen=True)
class Kind:
    """A schedule kind: its keys (in canonical order), the defaults of keys a spec leaves out (``fit``: the
    values given so far and the :class:`Fit` → the missing ones), its curve (``build``) and its twin's line.

    ``group``: how param groups follow it, by its twin's own rule: ``own`` (PyTorch: each group from its own
    LR, absolute values such as ``eta_min`` shared), ``ratio`` (transformers' ``LambdaLR``: one factor for
    every group, so each group's LR keeps its ratio to group 0's), ``same`` (``OneCycleLR``'s one ``max_lr``).
    ``transformers``: the twin counts steps (its line notes epochs), else PyTorch's (its line notes steps);
    ``hf``: the transformers call with its warmup, where transformers has this kind (else ``SequentialLR``).
    """

    name: str
    params: tuple[Param, ...]
    fit: Callable[[dict[str, Any], Fit], dict[str, Any]]
    build: Callable[[dict[str, Any], Fit], Curve]
    line: Callable[[dict[str, Any], LineUnits], str]
    hf: Callable[[dict[str, Any], LineUnits], str | None] | None = None  # the transformers call, when it is one
    group: str = "own"
    warmup: bool = True
    transformers: bool = False
    checks: tuple[Callable[[dict[str, Any], Fit], None], ...] = field(default=())


def constant_defaults(params: tuple[Param, ...]) -> dict[str, Any]:
    return {p.name: p.default for p in params if p.default is not None}
