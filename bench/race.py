"""The race's figures: ``race_restore_exact`` and ``race_overhead`` (see ``bench/run.py``).

Both on the demo's task (the MLP on spirals, CPU) through the public API, in this process.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import lrwatch
from lrwatch.demo_task import DemoConfig, DemoTask
from lrwatch.protocol.commands import Race, RaceEnd

RACE_SECONDS = 2.0  # each race's planned length: H follows the machine's speed, not a fixed step count


def _state(task: DemoTask) -> list[torch.Tensor]:
    weights = list(task.model.state_dict().values())
    buffers = [s["momentum_buffer"] for s in task.optimizer.state.values()]
    return [t.clone() for t in (*weights, *buffers, torch.get_rng_state())]


def _watched(tmp: Path) -> tuple[DemoTask, Any, Any]:
    task = DemoTask(DemoConfig(device="cpu", epochs=1000))
    monitor = lrwatch.watch(
        task.optimizer, model=task.model, epochs=1000, steps_per_epoch=task.config.steps, run_dir=tmp,
        train_step=task.train_step, batches=task.batches, evaluate=task.evaluate,
    )  # fmt: skip
    return task, monitor, task.batches(0)


def _train_for(seconds: float, task: DemoTask, monitor: Any, batches: Any) -> float:
    """Seconds per step of the run's own loop (``monitor.step`` included), over ``seconds``."""
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        monitor.step(task.train_step(next(batches)))
        steps += 1
    return (time.perf_counter() - started) / steps


def race_restore_exact(report: Callable[..., None]) -> None:
    """After ``escape`` (a race cancelled mid-way) and after a race that keeps none: weights, momentum and
    RNG state equal the snapshot's bit for bit (1) or not (0)."""
    with tempfile.TemporaryDirectory() as tmp:
        task, monitor, batches = _watched(Path(tmp))
        for _ in range(50):
            monitor.step(task.train_step(next(batches)))
        loss = task.train_step(next(batches))
        before = _state(task)  # the snapshot's state: monitor.step changes no weight
        monitor.engine.submit(Race(steps=1_000_000))
        monitor.engine.submit(RaceEnd(-1))  # escape, seen at the race's first step
        monitor.step(loss)  # the step boundary where both land
        cancelled = [e for e in monitor.engine.events_since(0) if e.kind == "race_end"][-1].data["outcome"]
        after_escape = _state(task)
        monitor.race(steps=20, keep="none")
        after_none = _state(task)
        monitor.close()
    same = [all(torch.equal(a, b) for a, b in zip(before, after, strict=True)) for after in (after_escape, after_none)]
    exact = cancelled == "cancelled" and all(same)
    report("race_restore_exact", float(exact), "", ">=", 1.0, "escape mid-race, then a race kept none")


def race_overhead(report: Callable[..., None], repeats: int) -> None:
    """Wall time of a race ÷ (steps it trained × the run's seconds per step), 5 candidates, the run's
    step time measured right before each race (side by side)."""
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        task, monitor, batches = _watched(Path(tmp))
        _train_for(1.0, task, monitor, batches)  # warm-up
        for _ in range(repeats):
            per_step = _train_for(RACE_SECONDS / 2, task, monitor, batches)
            horizon = max(20, round(RACE_SECONDS / 5 / per_step))
            started = time.perf_counter()
            result = monitor.race(steps=horizon, keep="none")
            wall = time.perf_counter() - started
            trained = sum(c["steps"] for c in result["candidates"])
            ratios.append(wall / (trained * per_step))
        monitor.close()
    spread = f"{min(ratios):.3f}–{max(ratios):.3f}"
    report("race_overhead", statistics.median(ratios), "×", "<=", 1.15, f"5 candidates, {spread} over {repeats}")
