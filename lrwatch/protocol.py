"""The engine↔UI boundary: small commands in, events out, all plain JSON-able data.

Nothing here holds a reference to a widget, a thread or a tensor, so the same messages can later
cross a socket (``lrwatch attach``) or reach every DDP rank.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

# Why a monitor-only run (the loop's own scheduler sets the LR) refuses Switch and EditParams.
MONITOR_ONLY = "monitor-only: the loop's own scheduler sets the LR, so switching is unavailable"


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
    """Change parameters of the active schedule, e.g. ``{"T_max": 30}``."""

    params: tuple[tuple[str, float], ...]
    name: ClassVar[str] = "edit"


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


COMMANDS: dict[str, type[Command]] = {
    c.name: c for c in (Switch, EditParams, Pause, Resume, Stop, Checkpoint, Rollback)
}


def command_from_dict(data: dict[str, Any]) -> Command:
    data = dict(data)
    cls = COMMANDS[data.pop("command")]
    if cls is EditParams:
        data["params"] = tuple((str(k), float(v)) for k, v in data["params"])
    return cls(**data)


@dataclass(frozen=True)
class Event:
    """Something that happened at a step: ``start``, ``resumed`` (from a checkpoint), ``switch``,
    ``edit``, ``pause``, ``resume``, ``stop``, ``checkpoint``, ``epoch``, ``warning``, ``divergence``,
    ``rollback``, ``finish``, ``error``, ``rejected`` (a command that changed nothing, with the reason)."""

    kind: str
    step: int
    epoch: float
    time: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, "step": self.step, "epoch": self.epoch, "time": self.time, **self.data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        data = dict(data)
        return cls(data.pop("event"), int(data.pop("step")), float(data.pop("epoch")), float(data.pop("time")), data)


class RunSource(Protocol):
    """What a monitor needs from a run: data to read and a place to send commands.

    :class:`lrwatch.engine.Engine` is one; a client of a remote run could be another.
    """

    @property
    def history(self) -> Any: ...

    @property
    def timeline(self) -> Any: ...

    def status(self) -> dict[str, Any]: ...

    def events_since(self, index: int) -> list[Event]: ...

    def submit(self, command: Command) -> None: ...
