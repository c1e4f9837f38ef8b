"""Every binding of the monitor, driven through ``App.run_test()`` and ``Pilot``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import numpy as np
import pytest

from lrwatch.app import LRWatchApp
from lrwatch.app.help import HelpScreen
from lrwatch.app.keys import nudged
from lrwatch.app.screens import ErrorScreen, SpecEditor
from lrwatch.app.widgets import Chart
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer, app_wait_for

K = 50


def slow_train(engine: Engine, steps: int = 10**9, delay: float = 0.002) -> None:
    """A stand-in training loop: a synthetic loss and a short wait per step, so the run lasts and the
    process looks idle to Pilot between key presses (it waits for idle CPU)."""
    engine.begin()
    for s in range(steps):
        time.sleep(delay)
        if not engine.step(1.0 / (1 + s / 100) + 0.05 * np.sin(s)):
            return
        if (s + 1) % K == 0:
            engine.end_epoch(val_loss=1.0 / (1 + s / 100), val_acc=0.5)


def make_app(spec: str = "cosine", epochs: int = 400, train: Callable | None = slow_train) -> LRWatchApp:
    timeline = Timeline.start(spec, lr=0.1, steps_per_epoch=K, total_steps=epochs * K)
    engine = Engine(FakeOptimizer(0.1), timeline)
    return LRWatchApp(engine, train, device="cpu", fps=4)


async def quit_app(app: LRWatchApp, pilot) -> None:
    """``q``, then wait: the app exits once the training thread has stopped at a step boundary."""
    await pilot.press("q")
    await app_wait_for(lambda: not app.is_running or app.return_code is not None, pilot, timeout=15)


def events(app: LRWatchApp, kind: str) -> list:
    return [e for e in app.source.events_since(0) if e.kind == kind]


@pytest.mark.parametrize(("key", "kind"), [("e", "exp"), ("c", "cosine"), ("r", "cosine-restarts"), ("s", "step")])
async def test_switch_keys_reach_the_engine_and_the_lr_follows(key: str, kind: str) -> None:
    app = make_app(spec="exp:gamma=0.99" if kind != "exp" else "cosine")
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 20, pilot)
        await pilot.press(key)
        await app_wait_for(lambda: bool(events(app, "switch")), pilot)
        switch = events(app, "switch")[0]
        assert app.source.timeline.segments[-1].schedule.kind == kind
        await app_wait_for(lambda: len(app.source.history) > switch.step + 30, pilot)
        lr = app.source.history.column("lr")
        assert np.array_equal(lr, app.source.timeline.lrs(np.arange(len(lr))))
        await app_wait_for(lambda: kind in str(app.screen.query_one("#schedule").render()), pilot)  # next frame
        await quit_app(app, pilot)
    assert app.return_code == 0


async def test_candidate_preview_then_apply_with_enter() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 10, pilot)
        chart = app.screen.query_one("#lr-chart", Chart)
        frames, shown = chart.frames, chart.text
        await pilot.press("S")
        assert app.candidates.kinds() == ["step"]
        assert chart.frames > frames  # redrawn at once
        assert chart.text != shown and any("\u2801" <= c <= "\u28ff" for c in chart.text)  # braille lines
        assert not events(app, "switch")
        await pilot.press("enter")
        await app_wait_for(lambda: bool(events(app, "switch")), pilot)
        assert events(app, "switch")[0].data["spec"].startswith("step:")
        assert not app.candidates
        await pilot.press("space")  # held near the switch's step: step, fitted now, is the schedule in force
        await app_wait_for(lambda: app.source.status().state == "paused", pilot)
        await pilot.press("v")  # the comparison set, less the kind that would equal continuing (step, fitted now)
        assert app.candidates.kinds() == ["cosine", "exp", "cosine-restarts", "linear"]
        assert app.candidates.marked == "cosine"
        await pilot.press("escape")
        assert not app.candidates
        for key in ("E", "C", "R", "S"):  # shown together, each toggled by its key
            await pilot.press(key)
        assert app.candidates.kinds() == ["exp", "cosine", "cosine-restarts", "step"]
        await pilot.press("C")
        assert app.candidates.kinds() == ["exp", "cosine-restarts", "step"] and app.candidates.marked == "step"
        await pilot.press("2")  # marks the second: enter applies it
        assert app.candidates.marked == "cosine-restarts"
        assert "▸━ 2 cosine-restarts" in str(app.screen.query_one("#schedule").render())
        await pilot.press("enter")
        await app_wait_for(lambda: len(events(app, "switch")) == 2, pilot)
        assert events(app, "switch")[1].data["spec"].startswith("cosine-restarts:")
        assert not app.candidates
        await pilot.press("q")


async def test_spec_editor_refuses_bad_specs_and_applies_good_ones() -> None:
    app = make_app(spec="cosine:T_max=100")
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 10, pilot)
        await pilot.press("colon")
        assert isinstance(app.screen, SpecEditor)
        editor = app.screen
        editor.query_one("#spec-input").value = "cosine:T_max=-5"
        await pilot.press("enter")
        assert isinstance(app.screen, SpecEditor)
        assert "T_max must be > 0" in str(editor.query_one("#spec-error").render())
        editor.query_one("#spec-input").value = "cosine:T_max=50"
        await pilot.press("enter")
        await app_wait_for(lambda: bool(events(app, "edit")), pilot)
        assert events(app, "edit")[0].data["spec"] == "cosine:T_max=50"
        assert app.source.timeline.segments[-1].origin_step == 0  # same kind: an edit, not a switch
        await pilot.press("slash")
        app.screen.query_one("#spec-input").value = "step:step_size=3,gamma=0.5"
        await pilot.press("enter")
        await app_wait_for(lambda: bool(events(app, "switch")), pilot)
        assert events(app, "switch")[0].data["spec"] == "step:step_size=3,gamma=0.5"
        await pilot.press("colon")
        await pilot.press("escape")
        assert not isinstance(app.screen, SpecEditor)
        assert len(events(app, "switch")) == 1 and len(events(app, "edit")) == 1
        await pilot.press("q")


async def test_nudges_edit_the_main_parameter() -> None:
    app = make_app(spec="cosine:T_max=100")
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 10, pilot)
        await pilot.press("plus")
        await app_wait_for(lambda: len(events(app, "edit")) == 1, pilot)
        await pilot.press("minus")
        await app_wait_for(lambda: len(events(app, "edit")) == 2, pilot)
        assert [e.data["spec"] for e in events(app, "edit")] == ["cosine:T_max=125", "cosine:T_max=100"]
        await pilot.press("q")


def test_nudged_values() -> None:
    assert nudged("T_max", 100, True) == 125 and nudged("T_max", 125, False) == 100
    assert nudged("gamma", 0.9, True) == 0.92 and nudged("gamma", 0.9, False) == 0.875
    assert nudged("step_size", 0.5, False) == 0.4
    assert nudged("gamma", 0.001, False) == 0.001  # stays in (0, 1]


async def test_anchor_toggle_makes_switches_restart_from_the_initial_lr() -> None:
    app = make_app(spec="exp:gamma=0.5")
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 120, pilot)
        await pilot.press("a")
        assert app.anchor == "base"
        await pilot.press("c")
        await app_wait_for(lambda: bool(events(app, "switch")), pilot)
        switch = events(app, "switch")[0]
        assert switch.data["anchor"] == "base" and switch.data["base_lr"] == 0.1
        await pilot.press("a")
        assert app.anchor == "continue"
        await pilot.press("q")


async def test_view_toggles_redraw_and_change_titles() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 100, pilot)
        lr_chart, loss_chart = app.screen.query_one("#lr-chart", Chart), app.screen.query_one("#loss-chart", Chart)
        for key, check in [
            ("l", lambda: app.monitor_screen.log_lr and "log" in str(lr_chart.border_title)),
            ("L", lambda: app.monitor_screen.log_loss and "log" in str(loss_chart.border_title)),
            ("w", lambda: app.monitor_screen.recent and "recent" in str(loss_chart.border_title)),
            (
                "right_square_bracket",
                lambda: app.monitor_screen.smoothing == 0.95 and "ema 0.95" in str(loss_chart.border_title),
            ),
            ("left_square_bracket", lambda: app.monitor_screen.smoothing == 0.9),
        ]:
            before = loss_chart.frames + lr_chart.frames
            await pilot.press(key)
            assert check(), key
            assert loss_chart.frames + lr_chart.frames > before, key
        await pilot.press("q")


async def test_pause_and_resume_with_space() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 10, pilot)
        await pilot.press("space")
        await app_wait_for(lambda: app.source.status().state == "paused", pilot)
        paused_at = len(app.source.history)
        await pilot.pause(0.3)
        assert len(app.source.history) == paused_at
        await app_wait_for(lambda: "paused" in str(app.screen.query_one("#status").render()), pilot)
        await pilot.press("space")
        await app_wait_for(lambda: len(app.source.history) > paused_at, pilot)
        assert [e.kind for e in app.source.events_since(0) if e.kind in ("pause", "resume")] == ["pause", "resume"]
        await pilot.press("q")


async def test_quit_while_paused_stops_at_a_boundary_and_exits_0() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 10, pilot)
        await pilot.press("space")
        await app_wait_for(lambda: app.source.status().state == "paused", pilot)
        await quit_app(app, pilot)
        await app_wait_for(lambda: not app.is_running, pilot)
    assert app.return_code == 0
    assert app.source.status().state == "stopped"
    assert [e.kind for e in app.source.events_since(0)][-2:] == ["stop", "finish"]


async def test_help_screen() -> None:
    app = make_app(train=None)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_finished_run_stays_open_until_q() -> None:
    app = make_app(epochs=2, train=lambda e: slow_train(e, steps=2 * K, delay=0))
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: app.source.status().state == "finished", pilot)
        await pilot.pause(0.2)
        assert app.is_running
        await app_wait_for(lambda: "finished" in str(app.screen.query_one("#status").render()), pilot)
        await quit_app(app, pilot)
    assert app.return_code == 0


async def test_crash_in_training_is_shown_and_the_app_stays_up() -> None:
    def crashing(engine: Engine) -> None:
        slow_train(engine, steps=30, delay=0)
        raise ValueError("loss went sideways")

    app = make_app(train=crashing)
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: isinstance(app.screen, ErrorScreen), pilot)
        assert "ValueError: loss went sideways" in app.screen.message
        assert "Traceback" in app.screen.traceback
        await pilot.press("escape")
        await app_wait_for(lambda: "error" in str(app.screen.query_one("#status").render()), pilot)
        await quit_app(app, pilot)
    assert app.return_code == 1


@pytest.mark.parametrize("size", [(80, 24), (100, 30), (160, 48), (60, 20), (40, 12)])
async def test_layouts_from_small_to_large(size: tuple[int, int]) -> None:
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 50, pilot)
        await pilot.pause(0.2)
        for widget_id in ("#lr-chart", "#loss-chart", "#status", "#schedule", "#events"):
            region = app.screen.query_one(widget_id).region
            assert region.right <= size[0] and region.bottom <= size[1]
        await pilot.press("q")


async def test_resize_storm_does_not_crash() -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        for width, height in [(40, 12), (200, 60), (80, 24), (41, 13), (120, 40)]:
            await pilot.resize_terminal(width, height)
            await asyncio.sleep(0.05)
            await pilot.pause()
        await quit_app(app, pilot)
    assert app.return_code == 0


async def test_frames_keep_coming_while_a_modal_is_open() -> None:
    """Ticks address the main screen's widgets; with help on top they must neither crash nor stall."""
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 10, pilot)
        await pilot.press("question_mark")
        status = app.monitor_screen.query_one("#status")
        shown = str(status.render())
        await app_wait_for(lambda: str(status.render()) != shown, pilot)  # the status panel still updates
        assert isinstance(app.screen, HelpScreen)
        await pilot.resize_terminal(60, 16)
        await pilot.pause(0.6)
        assert app.monitor_screen.has_class("tiny")
        await pilot.press("escape")
        await quit_app(app, pilot)
    assert app.return_code == 0


async def test_charts_redraw_less_often_when_a_redraw_costs_more() -> None:
    """A redraw that costs 30 ms of CPU stretches the interval to 3 s (charts keep to 1% of a core);
    new data inside it waits, and the run panel still refreshes every second."""
    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=K, total_steps=20 * K)
    engine = Engine(FakeOptimizer(0.1), timeline)
    engine.begin()
    now, cpu = [0.0], [0.0]

    def cpu_clock() -> float:  # every reading 30 ms later: each redraw "costs" 30 ms
        cpu[0] += 0.03
        return cpu[0]

    def advance(seconds: float, steps: int) -> None:
        for _ in range(steps):
            engine.step(1.0)
        now[0] += seconds

    app = LRWatchApp(engine, None, clock=lambda: now[0], cpu_clock=cpu_clock)
    async with app.run_test(size=(100, 30)) as pilot:
        chart = app.screen.query_one("#lr-chart", Chart)
        await app_wait_for(lambda: chart.frames > 0, pilot)
        assert app.chart_interval == pytest.approx(3.0)
        frames, status = chart.frames, str(app.screen.query_one("#status").render())
        advance(1.5, 3 * K)  # three epochs: the run is columns further on
        app.tick()
        assert chart.frames == frames  # 1.5 s < 3 s: the charts wait
        assert str(app.screen.query_one("#status").render()) != status  # the numbers do not
        advance(1.6, 0)
        app.tick()
        assert chart.frames == frames + 1
