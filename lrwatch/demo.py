"""The demo's configuration and its planned schedule, without torch.

The monitor of ``lrwatch demo`` draws the schedule ahead from this before the run process has
imported torch (:func:`planned_timeline`); the task itself (data, model, loop) is
:mod:`lrwatch.demo_task`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from lrwatch.record.rundir import read_run_info
from lrwatch.schedule.spec import parse_switch
from lrwatch.schedule.timeline import Timeline


@dataclass(frozen=True)
class DemoConfig:
    epochs: int = 40
    steps_per_epoch: int | None = None  # default: one pass over the training set
    batch_size: int = 128
    lr: float = 0.05
    seed: int = 0
    device: str = "auto"
    schedule: str | None = "cosine"
    switches: tuple[str, ...] = ()
    per_epoch: bool = False
    checkpoint_every: float | None = None
    total_steps: int | None = None  # the run's length, when not epochs × steps
    train_size: int = 60_000
    val_size: int = 6_000
    classes: int = 10
    hidden: int = 256
    noise: float = 0.35
    label_noise: float = 0.05

    @property
    def steps(self) -> int:
        return self.steps_per_epoch or max(1, self.train_size // self.batch_size)

    def as_fields(self) -> dict[str, Any]:
        """Everything but the device (a resumed run may move)."""
        return {k: v for k, v in asdict(self).items() if k != "device"}

    @classmethod
    def from_run_dir(cls, run_dir: str | Path) -> DemoConfig:
        """The configuration a demo run recorded in its ``run.json``."""
        config = read_run_info(run_dir).get("config", {})
        if config.get("command") != "demo":
            raise ValueError(f"{run_dir} is not a demo run; resume it with lrwatch run --resume")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in known}
        values["switches"] = tuple(values.get("switches", ()))
        return cls(**values)


def planned_timeline(config: DemoConfig) -> Timeline:
    """The timeline the demo's ``lrwatch.watch()`` starts from, with its ``--switch`` es applied where they
    are planned: what the monitor draws ahead until the run answers (then the run's own replaces it)."""
    steps = config.steps
    total = config.total_steps if config.total_steps is not None else steps * config.epochs
    timeline = Timeline.start(
        config.schedule or "cosine", lr=config.lr, steps_per_epoch=steps, total_steps=total, per_epoch=config.per_epoch
    )
    for when, spec in sorted(map(parse_switch, config.switches), key=lambda switch: switch[0].to_steps(steps)):
        timeline = timeline.switch(round(when.to_steps(steps)), spec)
    return timeline
