"""The engine↔UI boundary: small commands in, events out, all plain JSON-able data.

Nothing here holds a reference to a widget, a thread or a tensor, so the same messages can later
cross a socket (``lrwatch attach``) or reach every DDP rank.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from lrwatch.schedule.base import Span, parse_span

# Why a monitor-only run (the loop's own scheduler sets the LR) refuses Switch and EditParams.
MONITOR_ONLY = "monitor-only: the loop's own scheduler sets the LR, so switching is unavailable"
TAKE_OVER = "the script's own scheduler sets the LR; a switch (e c r s, :) hands it to lrwatch"


@dataclass(frozen=True)
class Command:
    name: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.name, **asdict(self)}


@dataclass(frozen=True)
class Switch(Command):
    """Switch to ``spec`` at the next step boundary; ``anchor`` overrides the spec's own."""

    spec: str
    anchor: str | None = None
    name: ClassVar[str] = "switch"


@dataclass(frozen=True)
class EditParams(Command):
    """Change parameters of the active schedule, e.g. ``{"T_max": 30}`` or ``{"T_max": "5000steps"}`` (a
    value in spec notation)."""

    params: tuple[tuple[str, float | str], ...]
    name: ClassVar[str] = "edit"


@dataclass(frozen=True)
class Length(Command):
    """The run's length from now on: ``value`` in spec notation, epochs (``"40"``) or steps (``"5000steps"``);
    the preview, ETA, progress and later fitted defaults follow."""

    value: str
    name: ClassVar[str] = "length"


@dataclass(frozen=True)
class Pause(Command):
    name: ClassVar[str] = "pause"


@dataclass(frozen=True)
class Resume(Command):
    name: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Stop(Command):
    reason: str = "user"
    name: ClassVar[str] = "stop"


@dataclass(frozen=True)
class Checkpoint(Command):
    """Save model, optimizer, timeline, step and RNG states into the run directory."""

    name: ClassVar[str] = "checkpoint"


@dataclass(frozen=True)
class Rollback(Command):
    """Restore the last good snapshot of model and optimizer and halve the LR (after a divergence)."""

    name: ClassVar[str] = "rollback"


@dataclass(frozen=True)
class FindLr(Command):
    """Run the LR range test from the run's current state at the next step boundary (``lrwatch.run.lrfind``);
    everything is restored after. Needs ``lrwatch.watch(..., train_step=, batches=, model=)``."""

    name: ClassVar[str] = "find-lr"


RACE_KEEP = ("none", "best")
MAX_RACE_CANDIDATES = 8


@dataclass(frozen=True)
class Race(Command):
    """Race candidate schedules from the run's current state at the next step boundary (``lrwatch.run.race``).

    ``specs``: the candidates besides continuing the current schedule (none: every kind with fitted
    defaults); ``steps``: the horizon H (None: one epoch or a tenth of what remains, the shorter);
    ``keep``: what happens when no monitor decides: ``none`` restores the snapshot, ``best`` keeps the
    lowest validation loss. Needs ``lrwatch.watch(..., train_step=, batches=, model=)``."""

    specs: tuple[str, ...] = ()
    steps: int | None = None
    keep: str = "none"
    name: ClassVar[str] = "race"

    def to_dict(self) -> dict[str, Any]:
        return {"command": self.name, "specs": list(self.specs), "steps": self.steps, "keep": self.keep}


@dataclass(frozen=True)
class RaceEnd(Command):
    """End the race: keep candidate ``keep`` (its index in the race) and go on from its end state, or
    (``keep=-1``) restore the snapshot; while the candidates still train, ``-1`` cancels the race."""

    keep: int = -1
    name: ClassVar[str] = "race-end"


COMMANDS: dict[str, type[Command]] = {
    c.name: c for c in (Switch, EditParams, Length, Pause, Resume, Stop, Checkpoint, Rollback, FindLr, Race, RaceEnd)
}


class CommandError(ValueError):
    """A command from outside (the socket, ``lrwatch send``) that is not well formed; one line."""


ANCHORS = ("continue", "base")


def command_from_wire(data: Any) -> Command:
    """A command from an untrusted peer, every field's type checked: :class:`CommandError` if not.

    What the types cannot say (a spec's keys and ranges) the run checks when it applies the command,
    and answers with a ``rejected`` event.
    """
    if not isinstance(data, dict) or not isinstance(data.get("command"), str):
        raise CommandError('expected a command object like {"command": "switch", "spec": "exp"}')
    name = data["command"]
    if name not in COMMANDS:
        raise CommandError(f"unknown command {name[:40]!r} (known: {', '.join(COMMANDS)})")
    fields = {k: v for k, v in data.items() if k != "command"}
    allowed = {
        "switch": {"spec", "anchor"}, "edit": {"params"}, "stop": {"reason"}, "race": {"specs", "steps", "keep"},
        "race-end": {"keep"}, "length": {"value"},
    }.get(name, set())  # fmt: skip
    extra = set(fields) - allowed
    if extra:
        raise CommandError(f"{name}: unexpected field {sorted(extra)[0][:40]!r}")
    if name == "switch":
        spec, anchor = fields.get("spec"), fields.get("anchor")
        if not isinstance(spec, str) or not 0 < len(spec) <= 500:
            raise CommandError("switch: 'spec' must be a spec string, e.g. \"cosine:T_max=20\"")
        if anchor is not None and anchor not in ANCHORS:
            raise CommandError('switch: \'anchor\' must be "continue" or "base"')
        return Switch(spec, anchor)
    if name == "edit":
        params = fields.get("params")
        pairs = list(params.items()) if isinstance(params, dict) else params
        ok = isinstance(pairs, list) and 0 < len(pairs) <= 8
        ok = ok and all(
            isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str) and len(p[0]) <= 40
            and ((isinstance(p[1], (int, float)) and not isinstance(p[1], bool))
                 or (isinstance(p[1], str) and 0 < len(p[1]) <= 200))
            for p in pairs
        )  # fmt: skip
        if not ok:
            raise CommandError(
                'edit: \'params\' must map parameter names to numbers or spec values, e.g. {"T_max": "5000steps"}'
            )
        return EditParams(tuple((str(k), _edit_value(v)) for k, v in pairs))
    if name == "length":
        value = fields.get("value")
        if not isinstance(value, str) or parse_length(value) is None:
            raise CommandError(f"length: 'value' must be a length > 0: epochs, or Nsteps (got {str(value)[:40]!r})")
        return Length(value.strip())
    if name == "stop":
        reason = fields.get("reason", "user")
        if not isinstance(reason, str) or len(reason) > 200:
            raise CommandError("stop: 'reason' must be a short string")
        return Stop(reason)
    if name == "race":
        return _race_from_wire(fields)
    if name == "race-end":
        keep = fields.get("keep", -1)
        if not isinstance(keep, int) or isinstance(keep, bool) or not -1 <= keep < MAX_RACE_CANDIDATES + 1:
            raise CommandError(f"race-end: 'keep' must be a candidate's index (0 to {MAX_RACE_CANDIDATES}) or -1")
        return RaceEnd(keep)
    return COMMANDS[name]()


def _race_from_wire(fields: dict[str, Any]) -> Race:
    specs, steps, keep = fields.get("specs", []), fields.get("steps"), fields.get("keep", "none")
    if not isinstance(specs, list) or len(specs) > MAX_RACE_CANDIDATES - 1:
        raise CommandError(f"race: 'specs' must be a list of at most {MAX_RACE_CANDIDATES - 1} spec strings")
    if not all(isinstance(spec, str) and 0 < len(spec) <= 500 for spec in specs):
        raise CommandError('race: every spec must be a spec string, e.g. "exp:gamma=0.9"')
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or not 0 < steps < 1 << 31):
        raise CommandError("race: 'steps' must be a number of steps > 0")
    if keep not in RACE_KEEP:
        raise CommandError('race: \'keep\' must be "none" or "best"')
    return Race(tuple(specs), steps, keep)


def _edit_value(value: float | str) -> float | str:
    return value if isinstance(value, str) else float(value)


def parse_length(text: str) -> Span | None:
    """A run's length in spec notation: epochs > 0, or a whole number of steps > 0 (``Nsteps``); else ``None``."""
    span = parse_span(text)
    if span is None or not (span.value > 0 and math.isfinite(span.value)):
        return None
    if span.steps and not float(span.value).is_integer():
        return None
    return span


def command_from_dict(data: dict[str, Any]) -> Command:
    data = dict(data)
    cls = COMMANDS[data.pop("command")]
    if cls is EditParams:
        data["params"] = tuple((str(k), _edit_value(v)) for k, v in data["params"])
    if cls is Race:
        data["specs"] = tuple(data.get("specs", ()))
    return cls(**data)
