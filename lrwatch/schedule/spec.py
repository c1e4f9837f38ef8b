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
from dataclasses import dataclass

from lrwatch.schedule.base import ANCHORS, Param, Schedule, SpecError, fmt, shown_params
from lrwatch.schedule.cosine import CosineAnnealing, CosineWarmRestarts
from lrwatch.schedule.exp import ExponentialDecay
from lrwatch.schedule.step import StepDecay

__all__ = [
    "KINDS", "Schedule", "ScheduleSpec", "SpecError",
    "default_params", "parse_spec", "parse_switch", "resolve", "spec_of",
]  # fmt: skip

_GAMMA = Param("gamma", "gamma", "in (0, 1]")
_ETA_MIN = Param("eta_min", "nonneg", ">= 0")

KINDS: dict[str, tuple[type, tuple[Param, ...]]] = {
    "exp": (ExponentialDecay, (_GAMMA, Param("decay_steps", "positive", "> 0 epochs"))),
    "cosine": (CosineAnnealing, (Param("T_max", "positive", "> 0 epochs"), _ETA_MIN)),
    "cosine-restarts": (
        CosineWarmRestarts,
        (
            Param("T_0", "positive", "> 0 epochs"),
            Param("T_mult", "int>=1", "an integer in [1, 1000]"),
            _ETA_MIN,
        ),
    ),
    "step": (StepDecay, (Param("step_size", "positive", "> 0 epochs"), _GAMMA)),
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
        parts = [f"{k}={fmt(v)}" for k, v in self.params]
        if self.lr is not None:
            parts.append(f"lr={fmt(self.lr)}")
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
    return ScheduleSpec(schedule.kind, tuple(shown_params(schedule).items()), anchor)


def parse_switch(text: str) -> tuple[float, str]:
    """``"EPOCH:SPEC"`` → ``(epoch, spec)``, validated; :class:`SpecError` with one line if not."""
    epoch_text, sep, spec = text.partition(":")
    try:
        epoch = float(epoch_text)
    except ValueError:
        epoch = math.nan
    if not sep or not math.isfinite(epoch) or epoch < 0:
        raise SpecError(f"expected EPOCH:SPEC with EPOCH >= 0, e.g. 10:cosine:T_max=20, got {text!r}")
    return epoch, str(parse_spec(spec))
