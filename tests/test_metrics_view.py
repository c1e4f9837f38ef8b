"""The metrics view (``m``): every metric in a grid sized to the terminal, pages, the filter, the main chart."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrwatch.app import LRWatchApp
from lrwatch.app.metrics import MetricsScreen, grid_shape, matches
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer, app_wait_for

K = 40
NAMES = ("grad_norm", "acc", "tokens", "grad_norm_head", "update_ratio")


def metrics_app(steps: int = 12 * K) -> LRWatchApp:
    """A run with five step-level metrics and an epoch-level ``val_f1``, driven to a fixed step (no thread)."""
    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=K, total_steps=30 * K)
    engine = Engine(FakeOptimizer(0.1), timeline)
    engine.system.next_at = math.inf  # no wall-clock readings: the same picture every time
    rng = np.random.default_rng(0)
    engine.begin()
    for s in range(steps):
        noise = rng.standard_normal(4)
        metrics = {
            "grad_norm": 1.0 + 0.5 * np.exp(-s / 100) + 0.1 * noise[0],
            "acc": min(0.95, 0.1 + s / 600) + 0.02 * noise[1],
            "tokens": 4096.0,
            "grad_norm_head": 0.3 + 0.05 * noise[2],
            "update_ratio": 1e-3 * (1 + 0.2 * noise[3]),
        }
        engine.step(2.0 * np.exp(-s / 150) + 0.3 + 0.1 * rng.standard_normal(), metrics=metrics)
        if (s + 1) % K == 0:
            engine.end_epoch(val_loss=2.0 * np.exp(-s / 150) + 0.35, val_f1=0.5 + s / 1000)
    return LRWatchApp(engine, None, device="cpu", clock=lambda: 0.0)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
def test_metrics_view(snap_compare, size: tuple[int, int]) -> None:
    assert snap_compare(metrics_app(), press=["m"], terminal_size=size)


def test_grid_fits_the_terminal_and_filter_takes_globs_and_substrings() -> None:
    assert grid_shape(80, 24) == (2, 2) and grid_shape(120, 40) == (3, 3)
    assert matches("grad_norm", "grad*") and matches("val_grad", "GRAD") and not matches("val_grad", "grad*")
    assert matches("acc", "") and matches("val_f1", "val_?1") and not matches("acc", "loss")


async def test_pages_filter_and_the_main_chart() -> None:
    app = metrics_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await app_wait_for(lambda: app.connected, pilot)
        await pilot.press("m")
        await app_wait_for(lambda: isinstance(app.screen, MetricsScreen) and app.screen._shown, pilot)
        screen = app.screen
        assert screen._shown == ["grad_norm", "acc", "tokens", "grad_norm_head"]  # a page: 2 × 2 at 80×24
        await pilot.press("n")
        await app_wait_for(lambda: screen._shown == ["update_ratio", "val_loss", "val_f1"], pilot)
        await pilot.press("slash", *"grad*", "enter")
        await app_wait_for(lambda: screen._shown == ["grad_norm", "grad_norm_head"], pilot)
        await pilot.press("tab", "enter")  # the second: into the main view's second chart
        assert app.second_metric == "grad_norm_head"
        await pilot.press("escape")
        await app_wait_for(lambda: app.screen is app.monitor_screen, pilot)
        chart = app.monitor_screen.query_one("#loss-chart")
        await app_wait_for(lambda: chart.border_title.startswith("grad_norm_head"), pilot)
        await pilot.press("m", "slash", *"grad*", "enter", "tab", "enter", "escape")  # enter again: the loss back
        await app_wait_for(lambda: app.second_metric is None and chart.border_title.startswith("loss"), pilot)
