"""lrwatch: watch the learning rate ahead and switch PyTorch LR schedules mid-run."""

from __future__ import annotations

from lrwatch.api import watch
from lrwatch.run.checkpoints import CheckpointError
from lrwatch.run.monitor import Monitor
from lrwatch.schedule.spec import SpecError

__all__ = ["CheckpointError", "Monitor", "SpecError", "watch"]
