"""Specs: ``KIND[:key=value,...]`` parsed and validated (:func:`parse_spec`), and resolved into a
:class:`Schedule` with the defaults it leaves out fitted to the run (:func:`resolve`).

The kinds live one family per module, each with its twin (PyTorch's names and, where transformers has the
kind, its call), its keys and ranges, its fitted defaults and its curve:

==================  =====================================================  =============
spec kind           twin                                                   module
==================  =====================================================  =============
``exp``             ``ExponentialLR``                                      ``exp``
``cosine``          ``CosineAnnealingLR``; ``get_cosine_schedule_with_warmup``  ``cosine``
``cosine-restarts`` ``CosineAnnealingWarmRestarts``                        ``cosine``
``step``            ``StepLR``                                             ``step``
``multistep``       ``MultiStepLR``                                        ``step``
``constant``        ``ConstantLR(factor=1)``; ``get_constant_schedule``    ``linear``
``linear``          ``LinearLR``; transformers' linear decay               ``linear``
``poly``            ``PolynomialLR``; ``get_polynomial_decay_schedule_with_warmup``  ``linear``
``onecycle``        ``OneCycleLR(cycle_momentum=False)``                   ``onecycle``
``inverse-sqrt``    ``get_inverse_sqrt_schedule``                          ``invsqrt``
``wsd``             ``get_wsd_schedule``                                   ``wsd``
``cooldown``        ``get_wsd_schedule``'s decay phase, from the LR in force; the run ends with it  ``wsd``
``plateau``         ``ReduceLROnPlateau``                                  ``plateau``
==================  =====================================================  =============

Every kind but ``cooldown`` takes ``warmup`` (and ``warmup_start``): :mod:`lrwatch.schedule.warmup`. Times are
epochs (``40``) or optimizer steps (``5000steps``), key by key (:class:`~lrwatch.schedule.base.Span`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lrwatch.schedule.base import (
    ANCHORS,
    Curve,
    Fit,
    Kind,
    LengthUnknown,
    LineUnits,
    Param,
    Span,
    SpecError,
    Value,
    constant_defaults,
    fmt,
    fmt_value,
    parse_span,
)
from lrwatch.schedule.cosine import COSINE, RESTARTS
from lrwatch.schedule.exp import EXP
from lrwatch.schedule.invsqrt import INVERSE_SQRT
from lrwatch.schedule.linear import CONSTANT, LINEAR, POLY
from lrwatch.schedule.onecycle import ONECYCLE
from lrwatch.schedule.plateau import PLATEAU
from lrwatch.schedule.step import MULTISTEP, STEP
from lrwatch.schedule.warmup import WARMUP, WARMUP_START, Warmup, warmup_line
from lrwatch.schedule.wsd import COOLDOWN, WSD

__all__ = [
    "CLASSIC", "KINDS", "LengthUnknown", "Schedule", "ScheduleSpec", "Span", "SpecError",
    "parse_spec", "parse_switch", "resolve", "spec_of",
]  # fmt: skip

KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        EXP,
        COSINE,
        RESTARTS,
        STEP,
        MULTISTEP,
        CONSTANT,
        LINEAR,
        POLY,
        ONECYCLE,
        INVERSE_SQRT,
        WSD,
        COOLDOWN,
        PLATEAU,
    )
}
CLASSIC = ("exp", "cosine", "cosine-restarts", "step")  # the four with single keys, and the race's default set


def params_of(kind: str) -> tuple[Param, ...]:
    """The keys of ``kind`` in canonical order: its own, then the warmup's."""
    k = KINDS[kind]
    return k.params + ((WARMUP, WARMUP_START) if k.warmup else ())


@dataclass(frozen=True)
class ScheduleSpec:
    """A parsed ``KIND[:key=value,...]``: the kind, the parameters given, and the anchor if given.

    ``anchor=continue`` (default) starts a switched-to schedule from the LR in force;
    ``anchor=base`` restarts it from the run's initial LR; ``lr=X`` starts it from ``X`` (a suggestion
    of the LR range test, say), whatever the anchor.
    """

    kind: str
    params: tuple[tuple[str, Value], ...] = ()
    anchor: str | None = None
    lr: float | None = None

    def __str__(self) -> str:
        parts = [f"{k}={fmt_value(v)}" for k, v in self.params]
        if self.lr is not None:
            parts.append(f"lr={fmt(self.lr)}")
        if self.anchor is not None:
            parts.append(f"anchor={self.anchor}")
        return self.kind + (":" + ",".join(parts) if parts else "")

    def given(self) -> dict[str, Value]:
        return dict(self.params)

    def with_params(self, **updates: Any) -> ScheduleSpec:
        """A copy with some parameters replaced (numbers, or values in spec notation: ``"5000steps"``),
        validated, in canonical key order."""
        known = {p.name: p for p in params_of(self.kind)}
        unknown = set(updates) - set(known)
        if unknown:
            raise SpecError(_unknown_key_message(self.kind, sorted(unknown)[0]))
        merged = self.given() | {k: known[k].coerce(self.kind, v) for k, v in updates.items()}
        ordered = tuple((name, merged[name]) for name in known if name in merged)
        return ScheduleSpec(self.kind, ordered, self.anchor, self.lr)


def _unknown_key_message(kind: str, key: str) -> str:
    allowed = ", ".join([p.name for p in params_of(kind)] + ["lr", "anchor"])
    return f"{kind}: unknown key {key[:40]!r}; allowed: {allowed}"


def parse_spec(text: str) -> ScheduleSpec:
    """Parse and validate ``KIND[:key=value,...]``; raise :class:`SpecError` with a one-line reason."""
    text = text.strip()
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise SpecError(f"unknown schedule {kind[:40]!r}; choose one of: {', '.join(KINDS)}")
    by_name = {p.name: p for p in params_of(kind)}
    params: list[tuple[str, Value]] = []
    anchor: str | None = None
    lr: float | None = None
    seen: set[str] = set()
    if rest.strip():
        for item in rest.split(","):
            key, eq, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not eq or not key or not raw:
                raise SpecError(f"{kind}: expected key=value, got {item.strip()[:40]!r}")
            if key in seen:
                raise SpecError(f"{kind}: {key} given twice")
            seen.add(key)
            if key == "anchor":
                if raw not in ANCHORS:
                    raise SpecError(f"{kind}: anchor must be one of {', '.join(ANCHORS)} (got {raw[:40]!r})")
                anchor = raw
            elif key == "lr":
                lr = _parse_lr(kind, raw)
            elif key not in by_name:
                raise SpecError(_unknown_key_message(kind, key))
            else:
                params.append((key, by_name[key].parse(kind, raw)))
    order = list(by_name)
    params.sort(key=lambda kv: order.index(kv[0]))
    return ScheduleSpec(kind, tuple(params), anchor, lr)


def _parse_lr(kind: str, raw: str) -> float:
    try:
        lr = float(raw)
    except ValueError:
        raise SpecError(f"{kind}: lr must be a number (got {raw[:40]!r})") from None
    if not (lr > 0 and math.isfinite(lr)):
        raise SpecError(f"{kind}: lr must be a finite number > 0 (got {raw[:40]})")
    return lr


def _has_steps(values: Any) -> bool:
    for value in values:
        if isinstance(value, Span) and value.steps:
            return True
        if isinstance(value, tuple) and any(isinstance(v, Span) and v.steps for v in value):
            return True
    return False


@dataclass(frozen=True)
class Schedule:
    """A resolved spec: every key's value (``spec``, units as given or fitted) and its curve over the steps
    since the segment's origin."""

    spec: ScheduleSpec
    curve: Curve
    steps_per_epoch: int = 1

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def group_rule(self) -> str:
        """How param groups follow it: ``own``, ``ratio`` or ``same`` (see :class:`~lrwatch.schedule.base.Kind`)."""
        return KINDS[self.kind].group

    @property
    def length_steps(self) -> float | None:
        """A cooldown's length in steps (the run ends with it); ``None`` for every other kind."""
        return self.curve.length if self.kind == "cooldown" else None  # type: ignore[attr-defined]

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        """The LR at ``t`` steps since the segment's origin, from ``base_lr``."""
        return self.curve.lr(base_lr, t)

    def params(self) -> dict[str, Value]:
        return self.spec.given()

    def scaled(self, ratio: float) -> Schedule:
        """This schedule for a param group whose LR is ``ratio`` × group 0's, by transformers' rule (``ratio``)."""
        scale = getattr(self.curve, "scaled", None)
        return replace(self, curve=scale(ratio)) if scale is not None and ratio != 1 else self

    def torch_line(self) -> str:
        """The twin a user can paste: the PyTorch scheduler (or transformers call), in the spec's unit: epochs,
        or steps when a time was given (or fitted) in steps, with a note when that is not the twin's own unit."""
        kind = KINDS[self.kind]
        values = self.spec.given()
        steps = _has_steps(values.values())
        units = LineUnits(self.steps_per_epoch, steps)
        hf = kind.hf(values, units) if kind.hf is not None and kind.warmup and values["warmup"].value else None
        line = kind.line(values, units)
        if kind.warmup and values["warmup"].value:
            line = warmup_line(line, values, units, hf)
        in_steps = kind.transformers or hf is not None
        if not any(isinstance(v, (Span, tuple)) for v in values.values()) or steps == in_steps:
            return line
        note = "step() per batch" if steps else "step() per epoch"
        return line + (f"; {note}" if "  # " in line else f"  # {note}")


def resolve(spec: ScheduleSpec, fit: Fit | float | None = None) -> Schedule:
    """Build the schedule a spec names, filling the keys it leaves out: constant defaults, and defaults fitted
    to the run (:class:`~lrwatch.schedule.base.Fit`; a number: the steps that remain, one step an epoch).
    :class:`~lrwatch.schedule.base.LengthUnknown` when a fitted default needs the run's unknown length."""
    if fit is None:
        fit = Fit()
    elif not isinstance(fit, Fit):
        fit = Fit(remaining_steps=float(fit))
    kind = KINDS[spec.kind]
    given = spec.given()
    fit = replace(fit, kind=spec.kind, in_steps=fit.in_steps or _has_steps(given.values()))
    values: dict[str, Any] = constant_defaults(params_of(spec.kind)) | given
    if kind.warmup:
        fit = replace(fit, warmup_steps=fit.steps(values["warmup"]))
    values = kind.fit(values, fit) | values
    if kind.warmup:
        values.setdefault("warmup_start", 0.0)
    for check in kind.checks:
        check(values, fit)
    curve = kind.build(values, fit)
    if fit.warmup_steps > 0:
        curve = Warmup(curve, fit.warmup_steps, values["warmup_start"])
    full = ScheduleSpec(spec.kind, tuple((p.name, values[p.name]) for p in params_of(spec.kind) if p.name in values))
    return Schedule(full, curve, fit.steps_per_epoch)


def spec_of(schedule: Schedule, anchor: str | None = None) -> ScheduleSpec:
    """The spec of a resolved schedule: every key but those at quiet defaults (and a warmup of 0)."""
    values = schedule.spec.given()
    shown = []
    for p in params_of(schedule.kind):
        if p.name not in values:
            continue
        value = values[p.name]
        if p.name == "warmup_start":
            if not values["warmup"].value or value == values.get("min_lr_ratio", 0.0):
                continue
        elif p.quiet and value == p.default:
            continue
        shown.append((p.name, value))
    return ScheduleSpec(schedule.kind, tuple(shown), anchor)


def parse_switch(text: str) -> tuple[Span, str]:
    """``"EPOCH:SPEC"`` or ``"Nsteps:SPEC"`` → ``(when, spec)``, validated; :class:`SpecError` with one line if not."""
    when_text, sep, spec = text.partition(":")
    when = parse_span(when_text)
    if not sep or when is None or not math.isfinite(when.value) or when.value < 0:
        raise SpecError(f"expected EPOCH:SPEC or Nsteps:SPEC with EPOCH >= 0, e.g. 10:cosine:T_max=20, got {text!r}")
    return when, str(parse_spec(spec))
