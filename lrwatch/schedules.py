"""Learning-rate schedules as pure closed forms of the epoch ``t``.

No torch, no Textual: each schedule is a frozen dataclass whose :meth:`lr` maps a
base LR and an array of (possibly fractional) epochs to LRs, vectorised over numpy.
Kinds and parameter names are PyTorch's, and for integer epochs the numbers equal
what the PyTorch twin gives after ``t`` calls of ``scheduler.step()``:

=================  ==============================  ======================================
spec kind          PyTorch twin                    closed form
=================  ==============================  ======================================
``exp``            ``ExponentialLR``               ``lr0 · gamma^(t / decay_steps)``
``cosine``         ``CosineAnnealingLR``           ``eta_min + ½(lr0 − eta_min)(1 + cos(π t / T_max))``
``cosine-restarts`` ``CosineAnnealingWarmRestarts`` the cosine over ``T_cur / T_i``, ``T_i = T_0 · T_mult^n``
``step``           ``StepLR``                      ``lr0 · gamma^⌊t / step_size⌋``
=================  ==============================  ======================================

A spec string ``KIND[:key=value,...]`` names a schedule; parameters it leaves out are
resolved when the schedule starts (see :func:`resolve`), because sensible defaults
for a mid-run switch depend on how much of the run is left.
"""

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


def _fmt(value: float) -> str:
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


def _params_of(schedule: object) -> dict[str, float]:
    return {f.name: getattr(schedule, f.name) for f in fields(schedule) if f.name != "kind"}  # type: ignore[arg-type]


def _shown_params(schedule: Schedule) -> dict[str, float]:
    return {k: v for k, v in schedule.params().items() if QUIET_DEFAULTS.get(k, None) != v}


def _torch_args(schedule: Schedule) -> str:
    return ", ".join(f"{k}={_fmt(v)}" for k, v in _shown_params(schedule).items())


@dataclass(frozen=True)
class ExponentialDecay:
    """``ExponentialLR``: ``lr(t) = lr0 · gamma^(t / decay_steps)``; ``decay_steps = 1`` is PyTorch's form."""

    gamma: float
    decay_steps: float = 1.0
    kind: str = "exp"

    def lr(self, base_lr: float, t: np.ndarray) -> np.ndarray:
        return base_lr * np.power(self.gamma, np.asarray(t, dtype=np.float64) / self.decay_steps)

    def params(self) -> dict[str, float]:
        return _params_of(self)

    def torch_line(self) -> str:
        if self.decay_steps == 1:
            return f"ExponentialLR(optimizer, gamma={_fmt(self.gamma)})"
        per_epoch = self.gamma ** (1.0 / self.decay_steps)
        return f"ExponentialLR(optimizer, gamma={_fmt(per_epoch)})  # {_fmt(self.gamma)}**(1/{_fmt(self.decay_steps)})"


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
        return _params_of(self)

    def torch_line(self) -> str:
        return f"CosineAnnealingLR(optimizer, {_torch_args(self)})"


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
        return _params_of(self)

    def torch_line(self) -> str:
        return f"CosineAnnealingWarmRestarts(optimizer, {_torch_args(self)})"


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
        return _params_of(self)

    def torch_line(self) -> str:
        return f"StepLR(optimizer, {_torch_args(self)})"


@dataclass(frozen=True)
class _Param:
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
            raise SpecError(f"{kind}: {self.name} must be {self.help} (got {_fmt_any(value)})")
        return int(value) if self.check == "int>=1" else float(value)


def _fmt_any(value: float) -> str:
    return _fmt(value) if math.isfinite(value) else str(value)


_GAMMA = _Param("gamma", "gamma", "in (0, 1]")
_ETA_MIN = _Param("eta_min", "nonneg", ">= 0")

KINDS: dict[str, tuple[type, tuple[_Param, ...]]] = {
    "exp": (ExponentialDecay, (_GAMMA, _Param("decay_steps", "positive", "> 0 epochs"))),
    "cosine": (CosineAnnealing, (_Param("T_max", "positive", "> 0 epochs"), _ETA_MIN)),
    "cosine-restarts": (
        CosineWarmRestarts,
        (
            _Param("T_0", "positive", "> 0 epochs"),
            _Param("T_mult", "int>=1", "an integer in [1, 1000]"),
            _ETA_MIN,
        ),
    ),
    "step": (StepDecay, (_Param("step_size", "positive", "> 0 epochs"), _GAMMA)),
}


@dataclass(frozen=True)
class ScheduleSpec:
    """A parsed ``KIND[:key=value,...]``: the kind, the parameters given, and the anchor if given.

    ``anchor=continue`` (default) starts a switched-to schedule from the LR in force;
    ``anchor=base`` restarts it from the run's initial LR; ``lr=X`` starts it from ``X`` (a suggestion
    of the LR range test, say), whatever the anchor.
    """

    kind: str
    params: tuple[tuple[str, float], ...] = ()
    anchor: str | None = None
    lr: float | None = None

    def __str__(self) -> str:
        parts = [f"{k}={_fmt(v)}" for k, v in self.params]
        if self.lr is not None:
            parts.append(f"lr={_fmt(self.lr)}")
        if self.anchor is not None:
            parts.append(f"anchor={self.anchor}")
        return self.kind + (":" + ",".join(parts) if parts else "")

    def given(self) -> dict[str, float]:
        return dict(self.params)

    def with_params(self, **updates: float) -> ScheduleSpec:
        """A copy with some parameters replaced (validated), in canonical key order."""
        merged = self.given() | updates
        _, known = KINDS[self.kind]
        ordered = tuple((p.name, p.validate(self.kind, float(merged[p.name]))) for p in known if p.name in merged)
        unknown = set(merged) - {p.name for p in known}
        if unknown:
            raise SpecError(_unknown_key_message(self.kind, sorted(unknown)[0]))
        return ScheduleSpec(self.kind, ordered, self.anchor, self.lr)


def _unknown_key_message(kind: str, key: str) -> str:
    allowed = ", ".join([p.name for p in KINDS[kind][1]] + ["lr", "anchor"])
    return f"{kind}: unknown key {key!r}; allowed: {allowed}"


def parse_spec(text: str) -> ScheduleSpec:
    """Parse and validate ``KIND[:key=value,...]``; raise :class:`SpecError` with a one-line reason."""
    text = text.strip()
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise SpecError(f"unknown schedule {kind!r}; choose one of: {', '.join(KINDS)}")
    _, known = KINDS[kind]
    by_name = {p.name: p for p in known}
    params: list[tuple[str, float]] = []
    anchor: str | None = None
    lr: float | None = None
    seen: set[str] = set()
    if rest.strip():
        for item in rest.split(","):
            key, eq, raw = item.partition("=")
            key, raw = key.strip(), raw.strip()
            if not eq or not key or not raw:
                raise SpecError(f"{kind}: expected key=value, got {item.strip()!r}")
            if key in seen:
                raise SpecError(f"{kind}: {key} given twice")
            seen.add(key)
            if key == "anchor":
                if raw not in ANCHORS:
                    raise SpecError(f"{kind}: anchor must be one of {', '.join(ANCHORS)} (got {raw!r})")
                anchor = raw
                continue
            if key == "lr":
                try:
                    lr = float(raw)
                except ValueError:
                    raise SpecError(f"{kind}: lr must be a number (got {raw!r})") from None
                if not (lr > 0 and math.isfinite(lr)):
                    raise SpecError(f"{kind}: lr must be a finite number > 0 (got {raw})")
                continue
            if key not in by_name:
                raise SpecError(_unknown_key_message(kind, key))
            try:
                value = float(raw)
            except ValueError:
                raise SpecError(f"{kind}: {key} must be a number (got {raw!r})") from None
            params.append((key, by_name[key].validate(kind, value)))
    order = [p.name for p in known]
    params.sort(key=lambda kv: order.index(kv[0]))
    return ScheduleSpec(kind, tuple(params), anchor, lr)


def _round_sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def _ceil_sig(value: float, digits: int = 4) -> float:
    """``value`` rounded up at ``digits`` significant digits, so a cycle fitted to the run never ends early."""
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return math.ceil(value / scale - 1e-9) * scale if value > 0 else value


def default_params(kind: str, remaining_epochs: float) -> dict[str, float]:
    """Parameters a spec leaves out, chosen for a schedule that starts with ``remaining_epochs`` to go.

    - ``exp``: ``gamma`` that reaches 1% of the starting LR at the end of the run
      (``0.01^(1 / remaining)``, 4 significant digits), ``decay_steps = 1``.
    - ``cosine``: ``T_max`` = the rest of the run, ``eta_min = 0``: one half cosine to the end.
    - ``cosine-restarts``: ``T_mult = 1``, ``eta_min = 0``, and ``T_0`` such that three cycles
      fill the rest of the run (``remaining / (1 + T_mult + T_mult²)``).

    Fitted lengths are rounded *up* at 4 significant digits, so a cycle never ends before the run.
    - ``step``: ``gamma = 0.1`` (PyTorch's default) and ``step_size`` a third of the rest, so the
      LR drops twice before the end.
    """
    remaining = max(float(remaining_epochs), 1e-9)
    return {
        "exp": {"gamma": min(1.0, _round_sig(0.01 ** (1.0 / remaining))), "decay_steps": 1.0},
        "cosine": {"T_max": _round_sig(_ceil_sig(remaining)), "eta_min": 0.0},
        "cosine-restarts": {"T_0": None, "T_mult": 1, "eta_min": 0.0},
        "step": {"step_size": _round_sig(remaining / 3), "gamma": 0.1},
    }[kind]


def resolve(spec: ScheduleSpec, remaining_epochs: float) -> Schedule:
    """Build the schedule a spec names, filling parameters it leaves out (see :func:`default_params`)."""
    cls, _ = KINDS[spec.kind]
    values = default_params(spec.kind, remaining_epochs) | spec.given()
    if spec.kind == "cosine-restarts" and values["T_0"] is None:
        m = int(values["T_mult"])
        values["T_0"] = _round_sig(_ceil_sig(max(remaining_epochs, 1e-9) / (1 + m + m * m)))
    return cls(**values)


def spec_of(schedule: Schedule, anchor: str | None = None) -> ScheduleSpec:
    """The spec of a resolved schedule: every parameter but those at PyTorch's defaults."""
    return ScheduleSpec(schedule.kind, tuple(_shown_params(schedule).items()), anchor)
