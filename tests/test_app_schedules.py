"""The monitor's side of issue 22: the length prompt when a fitted switch needs the run's length, and ``D``,
the cooldown as a candidate that ``enter`` applies (the run then ends with it)."""

from __future__ import annotations

from lrwatch.app import LRWatchApp
from lrwatch.app.length import LengthPrompt
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer, app_wait_for
from tests.test_app import events, quit_app, slow_train


def app_of(spec: str, total: int | None) -> LRWatchApp:
    timeline = Timeline.start(spec, lr=0.1, steps_per_epoch=50, total_steps=total)
    return LRWatchApp(Engine(FakeOptimizer(0.1), timeline), slow_train, device="cpu", fps=4)


async def test_a_fitted_switch_asks_for_the_length_prefilled_with_as_many_steps_again() -> None:
    app = app_of("constant", None)
    async with app.run_test(size=(80, 24)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 20, pilot, timeout=30)
        await pilot.press("c")
        await app_wait_for(lambda: isinstance(app.screen, LengthPrompt), pilot)
        prompt = app.screen
        done = prompt.done_steps
        assert prompt.query_one("#spec-input").value == f"{2 * done}steps" and done >= 20
        assert "cosine's T_max" in str(prompt.query_one("#editor-title").render())
        prompt.query_one("#spec-input").value = "5steps"  # behind the run: refused in the prompt
        await pilot.press("enter")
        assert isinstance(app.screen, LengthPrompt) and "done already" in str(prompt.query_one("#spec-error").render())
        prompt.query_one("#spec-input").value = "40"  # epochs
        await pilot.press("enter")
        await app_wait_for(lambda: bool(events(app, "switch")), pilot)
        (length,) = events(app, "length")
        switch = events(app, "switch")[0]
        assert length.data["total_steps"] == 2000 and length.step <= switch.step
        assert app.source.timeline.total_steps == 2000
        assert switch.data["spec"].startswith("cosine:T_max=") and not events(app, "rejected")
        await quit_app(app, pilot)


async def test_escape_in_the_length_prompt_changes_nothing() -> None:
    app = app_of("constant", None)
    async with app.run_test(size=(80, 24)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 5, pilot, timeout=30)
        await pilot.press("C")
        await app_wait_for(lambda: isinstance(app.screen, LengthPrompt), pilot)
        await pilot.press("escape")
        await app_wait_for(lambda: not isinstance(app.screen, LengthPrompt), pilot)
        assert not app.candidates.specs and not events(app, "length") and app.source.timeline.total_steps is None
        await quit_app(app, pilot)


async def test_d_shows_the_cooldown_and_enter_applies_it_as_shown() -> None:
    """``D``: a cooldown fitted to a quarter of the steps done (the last 20% of the run it ends), drawn as a
    candidate; ``enter`` switches to exactly that spec, and the run ends at its last step."""
    app = app_of("cosine:T_max=400", 400 * 50)
    async with app.run_test(size=(80, 24)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 60, pilot, timeout=30)
        await pilot.press("D")
        (shown,) = app.candidates.timelines.values()
        seg = shown.segments[-1]
        length = seg.schedule.params()["length"]
        assert length.steps and length.value == -(-seg.start_step // 4)
        assert shown.total_steps == seg.start_step + length.value  # the candidate's run ends with it
        assert "cooldown" in str(app.screen.query_one("#schedule").render())
        await pilot.press("enter")
        await app_wait_for(lambda: bool(events(app, "switch")), pilot)
        switch = events(app, "switch")[0]
        assert switch.data["spec"] == str(seg.spec)
        end = switch.step + int(length.value)
        await app_wait_for(lambda: app.source.status().state == "finished", pilot, timeout=30)
        assert len(app.source.history) == end and app.source.status().step == end
        await pilot.press("q")
