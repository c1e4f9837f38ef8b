"""Events out of a run, and where a run stands: what every run source (the engine, a run directory,
a socket) tells a monitor. Plain JSON-able data."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol, get_args

from lrwatch.protocol.commands import Command

# "starting": served before its first optimizer step (lrwatch.live.starting); commands wait for that step
RunState = Literal["starting", "created", "running", "paused", "stopping", "stopped", "finished", "error", "lost"]
RUN_STATES: tuple[RunState, ...] = get_args(RunState)
LIVE_STATES: tuple[RunState, ...] = ("starting", "created", "running", "paused")  # commands still land
ENDED_STATES: tuple[RunState, ...] = ("finished", "stopped", "error")  # how a run ends ("lost": its process died)

EventKind = Literal[
    "start", "resumed", "switch", "edit", "pause", "resume", "stop", "checkpoint", "epoch", "warning",
    "divergence", "rollback", "finish", "error", "rejected", "lr_find", "race_start", "race", "race_end",
    "length", "plateau", "schedule",
]  # fmt: skip
EVENT_KINDS: tuple[EventKind, ...] = get_args(EventKind)


@dataclass(frozen=True)
class Event:
    """Something that happened at a step: ``start``, ``resumed`` (from a checkpoint), ``switch``,
    ``edit``, ``pause``, ``resume``, ``stop``, ``checkpoint``, ``epoch``, ``warning``, ``divergence``,
    ``rollback``, ``finish``, ``error``, ``rejected`` (a command that changed nothing, with the reason),
    ``lr_find`` (a range test's result), ``race_start``, ``race`` (every candidate's result), ``race_end``,
    ``length`` (the run's length given), ``plateau`` (a reduction on plateau: the metric, the LRs before and after),
    ``schedule`` (a script's own schedule, better known: its cadence, its LRs ahead; the new timeline)."""

    kind: EventKind
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


@dataclass(frozen=True)
class RunStatus:
    """Where a run stands, as every run source tells it (the engine, a run directory, a socket)."""

    state: RunState
    step: int  # steps done
    epoch: float
    total_steps: int | None  # the planned run (None: unknown)
    steps_per_epoch: int
    lr: float  # the LR of the next step (monitor-only: of the last)
    run_dir: str | None = None
    error: str | None = None
    drives_lr: bool = True  # False: monitor-only, the loop's own scheduler sets the LR
    takes_over: bool = False  # monitor-only until a switch, which hands the LR to lrwatch (lrwatch run)
    epochs_known: bool = True  # False: an epoch is one step here (lrwatch run found no DataLoader length)
    device: str = ""
    ranks: int = 1  # DDP: the world size (the monitor shows rank 0)
    gpu: dict[str, Any] | None = None  # lrwatch.run.gpu's last sample of the run's GPU (None: a CPU run)
    read_only: bool = False  # a view: commands change nothing
    pid: int | None = None  # a live run's: the process that trains
    socket: str | None = None
    schedule: str | None = None  # the active spec
    clients: int = 0  # monitors attached to a live run
    race: dict[str, Any] | None = None  # a race under way: lrwatch.run.race.RaceRun.progress()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunStatus:
        """From the wire: unknown keys (a newer run) are ignored; ``"nan"`` LRs become floats."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        lr = values.get("lr", math.nan)
        values["lr"] = float(lr) if lr is not None else math.nan
        return cls(**values)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


class RunSource(Protocol):
    """What a monitor needs from a run: data to read and a place to send commands.

    :class:`lrwatch.run.engine.Engine` is one; a client of a remote run could be another.
    """

    @property
    def history(self) -> Any: ...

    @property
    def timeline(self) -> Any: ...

    def status(self) -> RunStatus: ...

    def events_since(self, index: int) -> list[Event]: ...

    def submit(self, command: Command) -> None: ...
