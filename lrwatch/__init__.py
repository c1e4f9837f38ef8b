"""lrwatch: watch the learning rate ahead and switch PyTorch LR schedules mid-run."""

from __future__ import annotations

from lrwatch.api import Monitor, watch
from lrwatch.checkpoints import CheckpointError
from lrwatch.schedules import SpecError

__all__ = ["CheckpointError", "Monitor", "SpecError", "watch"]
