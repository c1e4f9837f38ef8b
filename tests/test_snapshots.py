"""Pictures of the main screen that must not regress (``pytest --snapshot-update`` to accept a change)."""

from __future__ import annotations

import numpy as np
import pytest

from lrwatch.app import LRWatchApp
from lrwatch.protocol.commands import Switch
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer

K = 40


def deterministic_app(steps: int = 12 * K) -> LRWatchApp:
    """A run driven to a fixed step without a thread: same data, same screen, every time."""
    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=K, total_steps=30 * K)
    engine = Engine(FakeOptimizer(0.1), timeline)
    engine.schedule_command(8 * K, Switch("exp:gamma=0.8"))
    rng = np.random.default_rng(0)
    engine.begin()
    for s in range(steps):
        engine.step(2.0 * np.exp(-s / 150) + 0.3 + 0.1 * rng.standard_normal())
        if (s + 1) % K == 0:
            engine.end_epoch(val_loss=2.0 * np.exp(-s / 150) + 0.35, val_acc=0.6)
    return LRWatchApp(engine, None, device="cpu", clock=lambda: 0.0)


SIZES = [(80, 24), (100, 30)]


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "100x30"])
def test_main_screen(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(deterministic_app(), terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "100x30"])
def test_candidate_set(snap_compare, size: tuple[int, int]) -> None:
    """Three candidates shown together (each toggled by its key), the second marked for enter."""
    assert snap_compare(deterministic_app(), press=["R", "C", "S", "2"], terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "100x30"])
def test_help(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(deterministic_app(), press=["question_mark"], terminal_size=size)


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "100x30"])
def test_range_test_result(snap_compare, size: tuple[int, int]) -> None:
    """The LR range test's result, clipped as torch-lr-finder plots it (the blow-up that stopped it left out)."""
    app = deterministic_app()
    lrs = np.geomspace(1e-7, 10, 100)
    smoothed = 2.3 - 1.6 / (1 + np.exp(-(np.log10(lrs) + 3.5) * 2)) + np.exp((np.log10(lrs) + 0.8) * 3)
    stop = int(np.argmax(smoothed > 5 * smoothed.min())) + 1  # the test stops at 5× the best loss, as lrwatch's does
    lrs, smoothed = lrs[:stop], smoothed[:stop]
    app.source.record("lr_find", steepest=1e-3, min_over_10=3e-3, points=len(lrs), diverged=True,
                      lrs=lrs.tolist(), smoothed=smoothed.tolist())  # fmt: skip
    app.lr_find_requested = True  # as if F was pressed here
    assert snap_compare(app, terminal_size=size)


def test_tiny_terminal_status_line(snap_compare) -> None:
    assert snap_compare(deterministic_app(), terminal_size=(60, 16))


@pytest.mark.parametrize("size", SIZES, ids=["80x24", "100x30"])
def test_race_results_table(snap_compare, size: tuple[int, int]) -> None:
    """A race's results over the main screen: the table (winner marked and selected), its candidates'
    losses drawn on the loss chart from the fork, named in its legend."""
    app = deterministic_app()
    engine = app.source
    fork, horizon = engine.step_index, 2 * K
    names = [("continue", "cosine:T_max=30", 0.0), ("exp", "exp:gamma=0.8", -0.02), ("step", "step:step_size=6", 0.03)]
    candidates = []
    for i, (name, spec, delta) in enumerate(names):
        curve = [0.8 + delta * 3 - 0.001 * j * (i + 1) for j in range(horizon)]
        candidates.append({
            "name": name, "spec": spec, "torch": f"{name}(optimizer)", "train_loss": curve[-1], "val_loss": 0.9 + delta,
            "delta_val": delta, "val": {}, "diverged": False, "steps": horizon, "seconds": 1.0,
            "curve_x": list(range(horizon)), "curve": curve,
        })  # fmt: skip
    engine.record("race_start", race=1, horizon=horizon, keep="none", candidates=[c["spec"] for c in candidates],
                  names=[c["name"] for c in candidates])  # fmt: skip
    engine.record("race", race=1, fork=fork, horizon=horizon, keep="none", evaluated=True, best=1, awaiting=True,
                  candidates=candidates)  # fmt: skip
    assert snap_compare(app, terminal_size=size)
