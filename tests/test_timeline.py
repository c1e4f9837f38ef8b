from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrwatch.schedule.base import Span
from lrwatch.schedule.spec import SpecError
from lrwatch.schedule.timeline import Timeline

K = 10


def start(spec: str = "cosine", epochs: int = 40, **kw) -> Timeline:
    return Timeline.start(spec, lr=0.1, steps_per_epoch=K, total_steps=epochs * K, **kw)


def test_switch_continues_from_the_lr_in_force() -> None:
    timeline = start().switch(123, "exp:gamma=0.9")
    before = timeline.lr_at(122)
    assert timeline.lr_at(123) == before
    assert timeline.lr_at(133) == pytest.approx(before * 0.9, rel=1e-12)
    assert timeline.segments[-1].base_lr == before


def test_anchor_base_restarts_from_the_initial_lr() -> None:
    timeline = start().switch(200, "cosine:T_max=10", anchor="base")
    assert timeline.lr_at(200) == 0.1
    assert timeline.switch(200, "cosine:T_max=10,anchor=base").lr_at(200) == 0.1


def test_cosine_without_t_max_anneals_over_the_rest_of_the_run() -> None:
    timeline = start(epochs=40).switch(100, "cosine")
    seg = timeline.segments[-1]
    assert seg.schedule.params()["T_max"] == Span(30)
    assert timeline.lr_at(399) == pytest.approx(seg.base_lr * (1 + np.cos(np.pi * 29.9 / 30)) / 2)


def test_restarts_without_t_0_fit_three_cycles_in_the_rest() -> None:
    timeline = start(epochs=40).switch(100, "cosine-restarts")
    assert timeline.segments[-1].schedule.params()["T_0"] == Span(10)
    lrs = timeline.lrs(np.array([100, 200, 300]))
    np.testing.assert_allclose(lrs, timeline.segments[-1].base_lr)


def test_switch_replaces_later_segments() -> None:
    timeline = start().switch(100, "exp:gamma=0.9").switch(200, "step:step_size=5").switch(150, "cosine")
    assert [s.start_step for s in timeline.segments] == [0, 100, 150]


def test_edit_keeps_origin_and_base() -> None:
    timeline = start("cosine:T_max=40").edit(100, T_max=20)
    seg = timeline.segments[-1]
    assert (seg.start_step, seg.origin_step, seg.base_lr) == (100, 0, 0.1)
    assert timeline.lr_at(200) == pytest.approx(0.0, abs=1e-15)  # t = 20 = T_max
    assert timeline.lr_at(99) == start("cosine:T_max=40").lr_at(99)
    with pytest.raises(SpecError, match="T_max must be > 0"):
        timeline.edit(150, T_max=-3)
    with pytest.raises(SpecError, match="unknown key 'gamma'"):
        timeline.edit(150, gamma=0.5)


def test_per_epoch_updates_change_only_at_epoch_boundaries() -> None:
    timeline = start("exp:gamma=0.5", per_epoch=True).switch(35, "step:step_size=1,gamma=0.5")
    lrs = timeline.lrs(np.arange(0, 60))
    changes = np.flatnonzero(np.diff(lrs)) + 1
    assert set(changes.tolist()) <= {10, 20, 30, 40, 50}
    assert lrs[35] == lrs[34] == 0.1 * 0.5**3
    assert lrs[40] == lrs[35] * 0.5


def test_preview_and_serialisation() -> None:
    timeline = start().switch(55, "cosine-restarts:T_0=3,T_mult=2,eta_min=0.001").edit(90, eta_min=0.002)
    again = Timeline.from_dict(timeline.to_dict())
    assert again == timeline
    assert np.array_equal(timeline.preview(0), again.lrs(np.arange(400)))
    assert len(timeline.preview(390)) == 10


@settings(max_examples=50, deadline=None)
@given(
    switches=st.lists(
        st.tuples(
            st.integers(1, 399),
            st.sampled_from(["exp", "cosine", "cosine-restarts:T_mult=2", "step", "cosine:T_max=7,anchor=base"]),
        ),
        max_size=6,
    )
)
def test_lr_sequence_is_continuous_at_continue_switches(switches: list[tuple[int, str]]) -> None:
    timeline = start()
    for step, spec in sorted(switches):
        timeline = timeline.switch(step, spec)
    lrs = timeline.lrs(np.arange(400))
    assert np.all(np.isfinite(lrs)) and np.all(lrs >= 0)
    for seg in timeline.segments[1:]:
        expected = 0.1 if seg.anchor == "base" else lrs[seg.start_step - 1]
        assert lrs[seg.start_step] == expected


def test_bad_start_arguments() -> None:
    with pytest.raises(SpecError, match="lr must be a finite number >= 0"):
        Timeline.start("cosine:T_max=5", lr=-1, steps_per_epoch=1)
    with pytest.raises(SpecError, match="steps per epoch"):
        Timeline.start("cosine:T_max=5", lr=0.1, steps_per_epoch=0)


def test_an_lr_of_0_is_an_lr() -> None:
    """A warmup's first step and a finished decay have LR 0: a run may start there, and continue from there."""
    timeline = Timeline.start("cosine:T_max=5", lr=0.0, steps_per_epoch=1)
    assert timeline.lrs(np.arange(4)).tolist() == [0.0] * 4
    assert timeline.take_over(3, "exp:gamma=0.5", 0.0).lr_at(5) == 0.0


def test_a_group_timeline_replays_switches_edits_and_scales_from_its_own_lr() -> None:
    """With eta_min = 0 every schedule is linear in its base LR, so a group with twice the initial LR has
    exactly twice the LR at every step, through a switch, an edit, a rollback's scale and a base restart."""
    t = Timeline.start("cosine", lr=0.1, steps_per_epoch=10, total_steps=400)
    t = t.switch(30, "exp:gamma=0.9").edit(50, gamma=0.8).scale(70, 0.5).switch(90, "step:step_size=3,anchor=base")
    t = t.switch(200, "cosine-restarts:T_0=2")
    group = t.for_group(0.2)
    steps = np.arange(400)
    np.testing.assert_allclose(group.lrs(steps), 2 * t.lrs(steps), rtol=1e-12)
    assert [s.start_step for s in group.segments] == [s.start_step for s in t.segments]
    assert t.for_group(0.1) is t


def test_a_spec_may_give_its_starting_lr() -> None:
    """``lr=``: the segment starts from that LR, whatever the anchor (a range test's suggestion)."""
    from lrwatch.schedule.spec import parse_spec

    spec = parse_spec("cosine:T_max=5,lr=0.02,anchor=base")
    assert spec.lr == 0.02 and str(spec) == "cosine:T_max=5,lr=0.02,anchor=base" and parse_spec(str(spec)) == spec
    for bad in ("cosine:lr=0", "cosine:lr=-1", "cosine:lr=nan", "cosine:lr=x", "cosine:lr=1,lr=2"):
        with pytest.raises(SpecError):
            parse_spec(bad)
    timeline = Timeline.start("exp:gamma=0.5", lr=0.1, steps_per_epoch=10, total_steps=100)
    switched = timeline.switch(30, "cosine:lr=0.02")
    assert switched.segments[-1].base_lr == 0.02 and switched.lr_at(30) == 0.02
    assert Timeline.start("cosine:T_max=5,lr=0.3", lr=0.1, steps_per_epoch=1).initial_lr == 0.3
    assert parse_spec("step:lr=0.5").with_params(gamma=0.5).lr == 0.5


def test_a_switch_with_lr_replays_from_the_events(tmp_path) -> None:
    from lrwatch.protocol.commands import Switch
    from lrwatch.record.reader import RunReader
    from lrwatch.run.engine import Engine
    from tests.conftest import FakeOptimizer

    engine = Engine(FakeOptimizer(0.1), Timeline.start("cosine", lr=0.1, steps_per_epoch=10, total_steps=60),
                    run_dir=tmp_path)  # fmt: skip
    engine.begin()
    for s in range(40):
        if s == 17:
            engine.submit(Switch("exp:gamma=0.5,lr=0.03"))
        engine.step(1.0)
    engine.finish()
    assert engine.timeline.segments[-1].base_lr == 0.03
    replayed = RunReader(tmp_path).timeline
    assert np.array_equal(replayed.lrs(np.arange(60)), engine.timeline.lrs(np.arange(60)))
