"""The monitor at the sizes it promises: text that fits its box, the x axis, candidates, the picker, the
help, a read-only view's keys, and charts that stay live on a run of unknown length."""

from __future__ import annotations

import numpy as np
import pytest

from lrwatch.app import LRWatchApp
from lrwatch.app.axis import StepClock, XAxis, nice_ceil, planned_end, zoomed_end
from lrwatch.app.help import HelpScreen, help_pages, sections_for
from lrwatch.app.picker import SchedulePicker
from lrwatch.app.screens import SpecEditor, clipped_curve
from lrwatch.app.textfit import tail_lines, wrap, wrap_spans
from lrwatch.app.widgets import Chart, EventLog
from lrwatch.charts.plot import ChartSpec, Line, frame_of
from lrwatch.run.engine import Engine
from lrwatch.schedule.choices import after_cycle, comparison_specs, same_as
from lrwatch.schedule.spec import KINDS
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer, app_wait_for

K = 40


# -- text that fits ----------------------------------------------------------------------------
@pytest.mark.parametrize("width", [18, 22, 26, 32])
def test_wrap_breaks_between_parameters_never_inside_a_word(width: int) -> None:
    for text in [
        "CosineAnnealingLR(optimizer, T_max=40, eta_min=0.001)",
        "StepLR(optimizer, step_size=13.05, gamma=0.1)",
        "cosine-restarts:T_0=2.426,T_mult=2,eta_min=0.001",
        "since epoch 2.778, from lr 0.08355",
    ]:
        lines = wrap(text, width)
        assert all(len(line) <= width for line in lines)
        assert "".join(line.strip() for line in lines).replace(" ", "") == text.replace(" ", "")  # nothing lost
        for _, b in wrap_spans(text, width):  # each line ends at a space, after "," "(" or a ":", or at the end
            assert b == len(text) or text[b] == " " or text[b - 1] in ",(:"
    assert wrap("CosineAnnealingLR(optimizer, T_max=40)", 26) == ["CosineAnnealingLR(", "  optimizer, T_max=40)"]


def test_event_log_shows_the_newest_events_whatever_its_height() -> None:
    from rich.text import Text

    entries = [Text(f"{i:>6} switch cosine-restarts:T_0={i}.5") for i in range(30)]
    for height in (1, 3, 7):
        lines = tail_lines(entries, 26, height)
        assert len(lines) <= height and "29" in lines[-1].plain + (lines[-2].plain if len(lines) > 1 else "")
        assert all(line.cell_len <= 26 for line in lines)


# -- the x axis ----------------------------------------------------------------------------------
def test_unknown_length_axis_grows_in_jumps_so_the_current_step_moves_across_it() -> None:
    """The freeze of a run without epochs: with the end at 1.25 × step the step stood in one column."""
    timeline = Timeline.start("constant", lr=0.1, steps_per_epoch=1)  # a run of unknown length
    columns = [step * 60 // planned_end(timeline, step) for step in range(75, 2000, 25)]
    assert len(set(columns)) > 20
    assert all(planned_end(timeline, s) >= max(1.25 * s, s + 10) for s in range(0, 5000, 7))
    assert [nice_ceil(v) for v in (0.3, 1.2, 2.2, 3, 7, 11, 240)] == [1, 2, 2.5, 5, 10, 20, 250]


def test_the_whole_run_loss_window_zooms_to_the_data_early_and_is_the_run_from_halfway() -> None:
    assert zoomed_end(1000, 10) < 40 and zoomed_end(1000, 10) >= 11  # the data fills more than a quarter
    assert zoomed_end(1000, 400) == 500 and zoomed_end(1000, 600) == 1000
    for step in range(10, 1000, 13):
        hi = zoomed_end(1000, step)
        assert step <= hi and (hi == 1000 or step * 4 > hi)


def test_wall_time_axis_interpolates_between_samples_and_runs_ahead_at_the_rate() -> None:
    clock = StepClock()
    for step, t in [(0, 100.0), (100, 110.0), (100, 150.0), (200, 160.0)]:  # a 40 s pause at step 100
        clock.add(step, t)
    assert list(clock.seconds(np.array([0, 50, 100, 150, 200]))) == [0, 5, 50, 55, 60]
    assert clock.seconds(np.array([300]))[0] == pytest.approx(60 + 100 / clock.rate())
    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=10, total_steps=2000)
    axis = XAxis.make("time", timeline, clock=clock, end=2000)
    assert axis.mode == "time" and axis.suffix in ("s", "m", "h")
    assert XAxis.make("epochs", timeline, epochs_known=False).mode == "steps"
    assert XAxis.make("steps", timeline).x(np.array([20]))[0] == 20 and XAxis.make("epochs", timeline).at(20) == 2


def test_log_y_spans_at_most_the_decades_asked() -> None:
    x = np.arange(100.0)
    cosine = 1e-3 * (1 + np.cos(np.pi * x / 99)) / 2  # down to 0 at the end
    frame = frame_of(ChartSpec([Line(x, cosine)], 60, 12, xlim=(0, 99), log_y=True, log_decades=4))
    assert frame.ylim[0] >= np.log10(1e-3) - 4.5 and frame.ylim[1] <= np.log10(1e-3) + 0.5


# -- candidates and the comparison set ---------------------------------------------------------------
def test_after_cycle_says_when_a_cosine_rises_again_and_when_a_decay_goes_flat() -> None:
    short = Timeline.start("cosine:T_max=30", lr=0.1, steps_per_epoch=K, total_steps=40 * K)
    assert after_cycle(short, 0, short.total_steps) == ("rises", 30 * K, 0.0)
    for spec in ("cosine", "exp", "step", "cosine-restarts", "cosine-restarts:T_0=5,T_mult=2", "step:step_size=3"):
        fitted = Timeline.start(spec, lr=0.1, steps_per_epoch=K, total_steps=40 * K)
        assert after_cycle(fitted, 0, fitted.total_steps) is None, spec
    linear = Timeline.start("linear:total_iters=20", lr=0.1, steps_per_epoch=K, total_steps=40 * K)
    assert after_cycle(linear, 0, 40 * K) == ("flat", 20 * K, 0.0)  # LinearLR shorter than the run
    assert after_cycle(short, 0, None) is None  # the run's length unknown: nothing to say


def test_comparison_set_leaves_out_what_equals_continuing() -> None:
    timeline = Timeline.start("exp:gamma=0.8913", lr=0.1, steps_per_epoch=K, total_steps=40 * K)
    assert comparison_specs(timeline, 0) == ["cosine", "step", "cosine-restarts", "linear"]  # exp is continuing
    assert comparison_specs(timeline, 20 * K) == ["cosine", "exp", "step", "cosine-restarts"]
    near = timeline.switch(0, "exp:gamma=0.8917")
    assert same_as(near, timeline, 0, 40 * K) and not same_as(timeline.switch(0, "exp:gamma=0.85"), timeline, 0, 40 * K)


# -- the app ---------------------------------------------------------------------------------------
def deterministic(steps: int = 12 * K, *, total: int | None = 30 * K, epochs_known: bool = True) -> LRWatchApp:
    k = K if epochs_known else 1
    start = "cosine" if total is not None else "constant"  # as watch() starts a run of unknown length
    engine = Engine(FakeOptimizer(0.1), Timeline.start(start, lr=0.1, steps_per_epoch=k, total_steps=total),
                    epochs_known=epochs_known)  # fmt: skip
    engine.begin()
    for s in range(steps):
        engine.step(2.0 * np.exp(-s / 150) + 0.3)
    return LRWatchApp(engine, None, device="cpu")


async def test_charts_move_on_a_run_without_epochs_or_length() -> None:
    """The charts of a run with neither an epoch length nor a length are redrawn as it goes (in steps)."""
    app = deterministic(steps=80, total=None, epochs_known=False)
    engine = app.source
    now = [0.0]
    app.clock = lambda: now[0]
    async with app.run_test(size=(80, 24)) as pilot:
        chart = app.screen.query_one("#lr-chart", Chart)
        await app_wait_for(lambda: chart.frames > 0, pilot)
        drawn = []
        for _ in range(12):
            for _ in range(40):
                engine.step(0.5)
            now[0] += 1.1
            app.tick()
            drawn.append(chart.frames)
        assert drawn[-1] - drawn[0] >= 8  # a redraw nearly every second, as on any run
        assert "x steps" in str(chart.border_title)
        bottom = chart.text.splitlines()[-1]
        assert "500" in bottom or "600" in bottom or "1k" in bottom  # the axis grew with the run (560 steps)


async def test_candidates_fit_and_the_events_panel_stays_at_80x24() -> None:
    app = deterministic()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.2)
        for key in ("E", "C", "R", "S", "E"):  # E twice: toggled off again
            await pilot.press(key)
        assert app.candidates.kinds() == ["cosine", "cosine-restarts", "step"]
        await pilot.press("v")
        await pilot.pause(0.2)
        schedule, events = app.screen.query_one("#schedule"), app.screen.query_one("#events", EventLog)
        assert schedule.region.bottom < events.region.y + 1 and events.region.height >= 5
        assert "start" in events.shown
        text = str(schedule.render())
        assert all(f"━ {slot} " in text for slot in (1, 2, 3))
        for line in text.splitlines():
            assert len(line) <= schedule.content_size.width
        await pilot.press("escape")
        assert not app.candidates


async def test_edit_label_keeps_the_origin_and_a_short_cycle_gets_a_note() -> None:
    app = deterministic()
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("colon")
        editor = app.screen
        assert isinstance(editor, SpecEditor)
        editor.query_one("#spec-input").value = "cosine:T_max=20"
        await pilot.pause(0.1)
        assert "its cycle ends at epoch 20: the LR then rises again" in str(editor.query_one("#spec-error").render())
        await pilot.press("enter")
        await pilot.pause(0.1)
        app.source.step(1.0)  # the edit lands at the step boundary
        app.tick()
        text = " ".join(str(app.screen.query_one("#schedule").render()).split())
        assert "origin" in text and "edited at epoch 12" in text and "rises again" in text


async def test_picker_lists_every_kind_previews_it_and_switches_or_shows_a_candidate() -> None:
    app = deterministic()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("p")
        picker = app.screen
        assert isinstance(picker, SchedulePicker) and picker.kinds == list(KINDS)
        chart = picker.query_one("#picker-chart", Chart)
        await app_wait_for(lambda: chart.frames > 0, pilot)
        before = chart.text
        await pilot.press("down")
        await app_wait_for(lambda: chart.text != before, pilot)  # the highlighted kind's preview
        kind = picker.kind
        assert kind in str(picker.query_one("#picker-info").render())
        await pilot.press("space")
        assert kind in app.candidates
        await pilot.press("enter")
        assert not isinstance(app.screen, SchedulePicker)
        app.source.step(1.0)
        assert app.source.timeline.segments[-1].schedule.kind == kind


@pytest.mark.parametrize("size", [(80, 24), (100, 30)])
def test_help_fits_without_scrolling_or_cut_phrases(size: tuple[int, int]) -> None:
    width, height = size[0] - 4, size[1] - 3  # the box's border and padding, and its title line
    pages = help_pages(sections_for(False, "epochs"), width, height)
    assert len(pages) == 1
    assert all(line.cell_len <= width for line in pages[0]) and len(pages[0]) <= height
    assert len(help_pages(sections_for(False, "epochs"), 40, 12)) > 1  # a tiny terminal pages instead


async def test_read_only_view_offers_only_the_keys_that_work_there() -> None:
    app = deterministic()
    engine = app.source
    status = engine.status

    def read_only():
        from dataclasses import replace

        return replace(status(), read_only=True, state="finished")

    engine.status = read_only
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause(0.3)
        footer = app.screen.query_one("Footer")
        shown = {key for key, b in footer.screen.active_bindings.items() if b.binding.show and b.enabled}
        assert shown <= {"question_mark", "q"}, shown
        await pilot.press("e")
        await pilot.press("space")
        assert not [e for e in engine.events_since(0) if e.kind in ("switch", "pause")]
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen) and app.screen.sections[-1][0] == "This view is read-only"
        await pilot.press("escape")
        await pilot.press("d")
        await pilot.press("q")
        await app_wait_for(lambda: app.return_code is not None, pilot)


def test_range_test_curve_is_clipped_like_torch_lr_finder() -> None:
    lrs, losses = np.geomspace(1e-7, 10, 100), np.linspace(2, 40, 100)
    x, y, first, last = clipped_curve(lrs, losses)
    assert (first, last) == (11, 95) and len(x) == 85 and y[-1] == losses[94]
    assert len(clipped_curve(lrs[:12], losses[:12])[0]) == 12  # too few to clip: all of it
