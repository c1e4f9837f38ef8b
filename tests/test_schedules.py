from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrwatch.schedule.base import Fit
from lrwatch.schedule.cosine import CosineAnnealing, CosineWarmRestarts
from lrwatch.schedule.exp import ExponentialDecay
from lrwatch.schedule.spec import KINDS, SpecError, parse_spec, resolve, spec_of
from lrwatch.schedule.step import StepDecay


@pytest.mark.parametrize(
    "text",
    [
        "exp:gamma=0.9",
        "exp:gamma=0.5,decay_steps=10",
        "cosine",
        "cosine:T_max=25,eta_min=0.001",
        "cosine-restarts:T_0=10,T_mult=2,eta_min=0.001",
        "step:step_size=30,gamma=0.1",
        "cosine:T_max=25,anchor=base",
        "exp:gamma=1e-5",
        "cosine:T_max=5000steps,warmup=2000steps",
        "multistep:milestones=30/60/90,gamma=0.1",
        "multistep:milestones=1000steps/3000steps",
        "onecycle:total_steps=1000steps,anneal=linear,three_phase=1",
        "wsd:decay=300steps,decay_type=cosine,min_lr_ratio=0.1",
        "cooldown:length=300steps,shape=linear",
        "plateau:factor=0.5,patience=2,mode=max,metric=val_acc",
        "inverse-sqrt:timescale=10000steps,warmup=1000steps,warmup_start=0.01",
        "constant",
        "linear:start_factor=0.5,end_factor=0.1,total_iters=7.5",
        "poly:total_iters=100,power=2,eta_min=1e-5",
    ],
)
def test_spec_round_trips(text: str) -> None:
    assert str(parse_spec(text)) == text


def test_spec_normalises_order_and_numbers() -> None:
    spec = parse_spec(" cosine-restarts: eta_min=1e-03 , T_0=10.0 ")
    assert str(spec) == "cosine-restarts:T_0=10,eta_min=0.001"
    assert parse_spec(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "lin",
            "unknown schedule 'lin'; choose one of: exp, cosine, cosine-restarts, step, multistep, constant, "
            "linear, poly, onecycle, inverse-sqrt, wsd, cooldown, plateau",
        ),
        ("exp:gama=0.9", "exp: unknown key 'gama'; allowed: gamma, decay_steps, warmup, warmup_start, lr, anchor"),
        ("exp:gamma=1.5", "exp: gamma must be in (0, 1] (got 1.5)"),
        ("exp:gamma=0", "exp: gamma must be in (0, 1] (got 0)"),
        ("cosine:T_max=0", "cosine: T_max must be > 0 (got 0)"),
        ("cosine:eta_min=-1", "cosine: eta_min must be >= 0 (got -1)"),
        ("cosine-restarts:T_mult=1.5", "cosine-restarts: T_mult must be an integer in [1, 1000] (got 1.5)"),
        ("step:step_size=ten", "step: step_size must be epochs or Nsteps (got 'ten')"),
        ("step:step_size", "step: expected key=value, got 'step_size'"),
        ("cosine:T_max=1,T_max=2", "cosine: T_max given twice"),
        ("cosine:anchor=start", "cosine: anchor must be one of continue, base (got 'start')"),
        ("cosine:T_max=nan", "cosine: T_max must be > 0 (got nan)"),
        ("cosine:T_max=inf", "cosine: T_max must be > 0 (got inf)"),
        ("cosine:lr=0", "cosine: lr must be a finite number > 0 (got 0)"),
        ("cosine:lr=fast", "cosine: lr must be a number (got 'fast')"),
        ("wsd:decay=0", "wsd: decay must be > 0 (got 0)"),
        ("wsd:decay=0steps", "wsd: decay must be > 0 (got 0steps)"),
        ("multistep:milestones=30/20", "multistep: milestones must increase (got 30/20)"),
        (
            "multistep:milestones=30/x",
            "multistep: milestones must be a list of epochs or Nsteps, e.g. 30/60/90 (got '30/x')",
        ),
        ("onecycle:three_phase=2", "onecycle: three_phase must be 0 or 1 (true or false) (got '2')"),
        ("onecycle:anneal=cosine", "onecycle: anneal must be one of cos, linear (got 'cosine')"),
        ("cosine:warmup=-1", "cosine: warmup must be >= 0 (got -1)"),
        ("cosine:warmup_start=2", "cosine: warmup_start must be in [0, 1] (got 2)"),
        ("cosine:T_max=5stepz", "cosine: T_max must be epochs or Nsteps (got '5stepz')"),
        ("cooldown:warmup=5", "cooldown: unknown key 'warmup'; allowed: length, shape, eta_min, lr, anchor"),
        ("plateau:factor=1", "plateau: factor must be in (0, 1) (got 1)"),
        ("plateau:patience=1.5", "plateau: patience must be an integer >= 0 (got 1.5)"),
        ("plateau:metric=val loss", "plateau: metric must be a metric's name, e.g. val_loss (got 'val loss')"),
        ("linear:start_factor=0", "linear: start_factor must be in (0, 1] (got 0)"),
    ],
)
def test_bad_specs_name_the_key_and_range(text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert str(info.value) == message
    assert "\n" not in str(info.value)


@settings(max_examples=3000, deadline=None)
@given(
    st.one_of(
        st.text(max_size=60),
        st.builds(
            lambda kind, pairs: kind + ":" + ",".join(f"{k}={v}" for k, v in pairs),
            st.sampled_from(["exp", "cosine", "cosine-restarts", "step", "cos", "", *KINDS]),
            st.lists(
                st.tuples(
                    st.sampled_from(
                        [
                            "gamma",
                            "T_max",
                            "eta_min",
                            "T_0",
                            "T_mult",
                            "step_size",
                            "anchor",
                            "x",
                            "",
                            "warmup",
                            "warmup_start",
                            "milestones",
                            "decay",
                            "stable",
                            "decay_type",
                            "length",
                            "shape",
                            "three_phase",
                            "anneal",
                            "pct_start",
                            "metric",
                            "mode",
                            "patience",
                        ]
                    ),
                    st.one_of(
                        st.floats(allow_nan=True, allow_infinity=True),
                        st.integers(),
                        st.text(max_size=5),
                        st.builds(lambda n: f"{n}steps", st.integers(-5, 10**6)),
                        st.builds(lambda a, b: f"{a}/{b}", st.integers(0, 100), st.integers(0, 100)),
                        st.sampled_from(["cos", "linear", "1-sqrt", "true", "min", "val_loss"]),
                    ),
                ),
                max_size=4,
            ),
        ),
    )
)
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        spec = parse_spec(text)
    except SpecError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert parse_spec(str(spec)) == spec


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(list(KINDS)),
    remaining=st.floats(min_value=10, max_value=1e5),  # a 1cycle must warm up over more than one step
    k=st.integers(1, 500),
    warmup=st.sampled_from(["", ",warmup=1", ",warmup=2steps"]),
)
def test_defaults_resolve_to_valid_schedules(kind: str, remaining: float, k: int, warmup: str) -> None:
    """Every kind's fitted defaults give a schedule whose spec reads back to the same LRs, finite, in [0, lr0]."""
    text = kind + (warmup if kind != "cooldown" else "")
    fit = Fit(steps_per_epoch=k, start_step=7, remaining_steps=remaining * k)
    schedule = resolve(parse_spec(text.replace(",", ":", 1)), fit)
    again = resolve(parse_spec(str(spec_of(schedule))), fit)
    t = np.linspace(0, remaining * k, 50)
    lrs = schedule.lr(0.1, t)
    assert np.array_equal(lrs, again.lr(0.1, t))
    assert np.all(np.isfinite(lrs)) and np.all(lrs >= 0) and np.all(lrs <= 0.1 * (1 + 1e-12))


def test_default_parameters_for_a_mid_run_switch() -> None:
    assert resolve(parse_spec("cosine"), 30).curve == CosineAnnealing(T_max=30)
    assert resolve(parse_spec("cosine-restarts"), 30).curve == CosineWarmRestarts(T_0=10)
    assert resolve(parse_spec("cosine-restarts:T_mult=2"), 70).curve == CosineWarmRestarts(T_0=10, T_mult=2)
    assert resolve(parse_spec("step"), 30).curve == StepDecay(step_size=10, gamma=0.1)
    exp = resolve(parse_spec("exp"), 20)
    assert isinstance(exp.curve, ExponentialDecay)
    assert exp.lr(1.0, np.array([20.0]))[0] == pytest.approx(0.01, rel=1e-3)
    assert resolve(parse_spec("cosine:T_max=5"), 30).curve == CosineAnnealing(T_max=5)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("exp:gamma=0.9", "ExponentialLR(optimizer, gamma=0.9)"),
        ("cosine:T_max=25,eta_min=0.001", "CosineAnnealingLR(optimizer, T_max=25, eta_min=0.001)"),
        ("cosine:T_max=25", "CosineAnnealingLR(optimizer, T_max=25)"),
        ("cosine-restarts:T_0=10,T_mult=2", "CosineAnnealingWarmRestarts(optimizer, T_0=10, T_mult=2)"),
        ("step:step_size=30,gamma=0.1", "StepLR(optimizer, step_size=30, gamma=0.1)"),
    ],
)
def test_torch_line(text: str, line: str) -> None:
    assert resolve(parse_spec(text), 100).torch_line() == line


def test_closed_forms_at_a_glance() -> None:
    t = np.array([0.0, 5.0, 10.0, 15.0, 20.0])
    np.testing.assert_allclose(StepDecay(10, 0.5).lr(1.0, t), [1, 1, 0.5, 0.5, 0.25])
    np.testing.assert_allclose(CosineAnnealing(10).lr(1.0, t), [1, 0.5, 0, 0.5, 1], atol=1e-15)
    np.testing.assert_allclose(CosineWarmRestarts(10).lr(1.0, t), [1, 0.5, 1, 0.5, 1], atol=1e-15)
    np.testing.assert_allclose(ExponentialDecay(0.5, decay_steps=5).lr(1.0, t), [1, 0.5, 0.25, 0.125, 0.0625])


@settings(max_examples=200, deadline=None)
@given(remaining=st.floats(min_value=0.01, max_value=1e5), t_mult=st.integers(1, 4))
def test_fitted_cycles_never_end_before_the_run(remaining: float, t_mult: int) -> None:
    cosine = resolve(parse_spec("cosine"), remaining).curve
    assert remaining * (1 - 1e-9) <= cosine.T_max <= remaining * (1 + 1e-3)
    restarts = resolve(parse_spec(f"cosine-restarts:T_mult={t_mult}"), remaining).curve
    three_cycles = restarts.T_0 * (1 + t_mult + t_mult**2)
    assert remaining * (1 - 1e-9) <= three_cycles <= remaining * (1 + 1e-3)
