"""``lrwatch export RUN_DIR --tensorboard DIR``: a run, as TensorBoard scalars and text, for a team's TensorBoard.

Written with PyTorch's own ``torch.utils.tensorboard.SummaryWriter`` (it needs the ``tensorboard``
package: the ``lrwatch[tensorboard]`` extra). Every step row becomes ``lr`` and ``loss/train`` at its
step; every other metric (a step's ``grad_norm``, ``acc``; an epoch's ``val_loss``, ``val_f1``) one scalar
tag of its own name, at each step it was logged; every event worth a
line (switch, edit, pause, stop, divergence, rollback, warning, error, ...) a ``events`` text entry at
its step, in the words of the headless lines. The run directory is only read.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from lrwatch.record.console import plain_line
from lrwatch.record.reader import RunReader


class ExportError(RuntimeError):
    """The export cannot start (no TensorBoard writer): one line, exit status 2."""


def export_tensorboard(run_dir: str | Path, out_dir: str | Path) -> dict[str, int]:
    """Write ``run_dir`` into ``out_dir`` as TensorBoard events; how many of each kind were written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer imports the tensorboard package
        raise ExportError("--tensorboard needs the tensorboard package: pip install 'lrwatch[tensorboard]'") from None
    reader = RunReader(run_dir)
    history = reader.history
    steps = history.column("step").astype(np.int64).tolist()
    counts = {"lr": 0, "loss/train": 0, "metrics": 0, "validation": 0, "events": 0}
    writer = SummaryWriter(log_dir=str(out_dir))
    try:
        for step, lr, loss in zip(steps, history.column("lr").tolist(), history.column("loss").tolist(), strict=True):
            writer.add_scalar("lr", lr, step)
            counts["lr"] += 1
            if math.isfinite(loss):  # a step without a loss (lrwatch run: no backward() seen) has none
                writer.add_scalar("loss/train", loss, step)
                counts["loss/train"] += 1
        for name in history.metric_names():  # every step-level metric: one tag, its own name
            metric_steps, metric_values = history.metric(name)
            for step, value in zip(metric_steps.tolist(), metric_values.tolist(), strict=True):
                if math.isfinite(value):
                    writer.add_scalar(name, value, step)
                    counts["metrics"] += 1
        val_steps, _, values = history.validation()
        for name, column in values.items():
            for step, value in zip(val_steps.astype(np.int64).tolist(), column.tolist(), strict=True):
                if math.isfinite(value):
                    writer.add_scalar(name, value, step)
                    counts["validation"] += 1
        for event in reader.events:
            line = plain_line(event)
            if line is not None:
                writer.add_text("events", line.strip(), event.step)
                counts["events"] += 1
    finally:
        writer.close()
    return counts


def earlier_events(out_dir: str | Path) -> list[Path]:
    """TensorBoard event files already in ``out_dir`` (an earlier export there): written again beside them,
    every point would show twice."""
    directory = Path(out_dir)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("events.out.tfevents.*") if p.is_file() or p.is_symlink())
