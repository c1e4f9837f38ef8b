"""The kinds people train with today, each against its twins themselves: PyTorch's schedulers and transformers'
``get_*_schedule*``, to a relative error of 1e-9 over 10,000 steps: per step and per epoch, after a switch, and
per param group by the twin's own rule. ``lrwatch schedule ... --format csv`` reads the same numbers."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
import transformers.optimization as hf
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as sched

from lrwatch.schedule.timeline import Timeline
from tests.test_parity import N_STEPS, _grouped, assert_close, lrwatch_groups, torch_per_epoch

lrs = st.floats(min_value=1e-5, max_value=1.0)


def ours(spec: str, lr: float, n: int = N_STEPS, k: int = 1, **kw) -> np.ndarray:
    """lrwatch's LR at steps 0..n-1 of a run that starts ``spec`` (total: ``n`` steps, ``k`` steps an epoch)."""
    return Timeline.start(spec, lr=lr, steps_per_epoch=k, total_steps=n, **kw).lrs(np.arange(n))


def warmed(w: int, start: float, then):
    """PyTorch's warmup: ``SequentialLR([LinearLR(start, 1, w), then], milestones=[w])``."""
    return lambda o: sched.SequentialLR(
        o, [sched.LinearLR(o, start_factor=start, end_factor=1.0, total_iters=w), then(o)], milestones=[w]
    )


# -- PyTorch's kinds ----------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(lr=lrs, start=st.floats(0.01, 1.0), end=st.floats(0.0, 1.0), total=st.integers(1, 12_000))
def test_linear_is_linear_lr(lr: float, start: float, end: float, total: int) -> None:
    theirs = torch_per_epoch(lambda o: sched.LinearLR(o, start_factor=start, end_factor=end, total_iters=total), lr)
    spec = f"linear:start_factor={start!r},end_factor={end!r},total_iters={total}"
    assert_close(ours(spec, lr), theirs, scale=lr)


@settings(max_examples=10, deadline=None)
@given(lr=lrs, total=st.integers(1, 12_000), power=st.floats(0.1, 4.0))
def test_poly_is_polynomial_lr(lr: float, total: int, power: float) -> None:
    theirs = torch_per_epoch(lambda o: sched.PolynomialLR(o, total_iters=total, power=power), lr)
    assert_close(ours(f"poly:total_iters={total},power={power!r}", lr), theirs, scale=lr)


@settings(max_examples=10, deadline=None)
@given(lr=lrs, gaps=st.lists(st.integers(1, 3000), min_size=1, max_size=5), gamma=st.floats(0.01, 1.0))
def test_multistep_is_multistep_lr(lr: float, gaps: list[int], gamma: float) -> None:
    milestones = np.cumsum(gaps).tolist()
    theirs = torch_per_epoch(lambda o: sched.MultiStepLR(o, milestones=milestones, gamma=gamma), lr)
    spec = f"multistep:milestones={'/'.join(map(str, milestones))},gamma={gamma!r}"
    assert_close(ours(spec, lr), theirs)


def test_constant_is_constant_lr_and_get_constant_schedule() -> None:
    assert_close(ours("constant", 0.3), torch_per_epoch(lambda o: sched.ConstantLR(o, factor=1.0), 0.3))
    assert_close(ours("constant", 0.3), torch_per_epoch(hf.get_constant_schedule, 0.3))


@settings(max_examples=10, deadline=None)
@given(
    lr=lrs,
    total=st.integers(20, N_STEPS),
    pct=st.floats(0.05, 0.95),
    anneal=st.sampled_from(["cos", "linear"]),
    div=st.floats(1.0, 100.0),
    final_div=st.floats(1.0, 1e5),
    three=st.booleans(),
)
def test_onecycle_is_one_cycle_lr(
    lr: float, total: int, pct: float, anneal: str, div: float, final_div: float, three: bool
) -> None:
    assume(pct * total > 1)  # else OneCycleLR divides by zero (lrwatch refuses it: below)
    make = lambda o: sched.OneCycleLR(  # noqa: E731
        o, max_lr=lr, total_steps=total, pct_start=pct, anneal_strategy=anneal, div_factor=div,
        final_div_factor=final_div, three_phase=three, cycle_momentum=False,
    )  # fmt: skip
    theirs = torch_per_epoch(make, lr, n=total)
    spec = (f"onecycle:total_steps={total},pct_start={pct!r},anneal={anneal},div_factor={div!r},"
            f"final_div_factor={final_div!r},three_phase={int(three)}")  # fmt: skip
    assert_close(ours(spec, lr, n=total), theirs, scale=lr)


# -- transformers' kinds ------------------------------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(lr=lrs, warmup=st.integers(0, 3000), timescale=st.one_of(st.none(), st.integers(1, 20_000)))
def test_inverse_sqrt_is_get_inverse_sqrt_schedule(lr: float, warmup: int, timescale: int | None) -> None:
    theirs = torch_per_epoch(lambda o: hf.get_inverse_sqrt_schedule(o, warmup, timescale=timescale), lr)
    spec = f"inverse-sqrt:warmup={warmup}" + (f",timescale={timescale}" if timescale is not None else "")
    assert_close(ours(spec, lr), theirs, scale=lr)


@settings(max_examples=15, deadline=None)
@given(
    lr=lrs,
    warmup=st.integers(0, 2000),
    stable=st.integers(0, 5000),
    decay=st.integers(1, 5000),
    decay_type=st.sampled_from(["linear", "cosine", "1-sqrt"]),
    ratio=st.one_of(st.just(0.0), st.floats(0.0, 0.5)),
)
def test_wsd_is_get_wsd_schedule(
    lr: float, warmup: int, stable: int, decay: int, decay_type: str, ratio: float
) -> None:
    make = lambda o: hf.get_wsd_schedule(  # noqa: E731
        o, warmup, decay, num_stable_steps=stable, decay_type=decay_type, min_lr_ratio=ratio
    )
    spec = f"wsd:warmup={warmup},stable={stable},decay={decay},decay_type={decay_type},min_lr_ratio={ratio!r}"
    assert_close(ours(spec, lr), torch_per_epoch(make, lr), scale=lr)


def test_wsd_fitted_to_the_run_is_get_wsd_schedule_with_20_percent_decay() -> None:
    """``wsd:warmup=500steps`` in a 10,000-step run: decay 20% of the run, stable what the warmup leaves."""
    timeline = Timeline.start("wsd:warmup=500steps", lr=1e-3, steps_per_epoch=100, total_steps=N_STEPS)
    assert str(timeline.segments[0].spec) == "wsd:decay=2000steps,stable=7500steps,warmup=500steps"
    make = lambda o: hf.get_wsd_schedule(o, 500, 2000, num_training_steps=N_STEPS, decay_type="1-sqrt")  # noqa: E731
    assert_close(timeline.lrs(np.arange(N_STEPS)), torch_per_epoch(make, 1e-3), scale=1e-3)


@settings(max_examples=10, deadline=None)
@given(lr=lrs, warmup=st.integers(0, 3000), total=st.integers(3001, 12_000), power=st.floats(0.5, 3.0),
       end=st.floats(0.0, 0.9))  # fmt: skip
def test_poly_with_warmup_is_transformers_polynomial_decay(
    lr: float, warmup: int, total: int, power: float, end: float
) -> None:
    lr_end = end * lr
    make = lambda o: hf.get_polynomial_decay_schedule_with_warmup(o, warmup, total, lr_end=lr_end, power=power)  # noqa: E731
    spec = f"poly:warmup={warmup},power={power!r},eta_min={lr_end!r}"
    assert_close(ours(spec, lr, n=total), torch_per_epoch(make, lr, n=total), scale=lr)


@pytest.mark.parametrize(
    ("spec", "make"),
    [
        ("linear:warmup=700", lambda o: hf.get_linear_schedule_with_warmup(o, 700, N_STEPS)),
        ("cosine:warmup=700", lambda o: hf.get_cosine_schedule_with_warmup(o, 700, N_STEPS)),
        ("constant:warmup=700", lambda o: hf.get_constant_schedule_with_warmup(o, 700)),
        ("poly:warmup=700", lambda o: hf.get_polynomial_decay_schedule_with_warmup(o, 700, N_STEPS, lr_end=0.0)),
        ("inverse-sqrt:warmup=700", lambda o: hf.get_inverse_sqrt_schedule(o, 700)),
    ],
)
def test_warmup_with_fitted_defaults_is_the_transformers_call(spec: str, make) -> None:
    """The warmup comes first and the kind's fitted default fills the rest after it, as ``get_*_with_warmup``."""
    assert_close(ours(spec, 0.01), torch_per_epoch(make, 0.01), scale=0.01)


# -- warmup on every kind: SequentialLR -----------------------------------------------------------------
WARMED = [
    ("cosine:T_max=3000", lambda o: sched.CosineAnnealingLR(o, T_max=3000)),
    ("cosine:T_max=3000,eta_min=0.001", lambda o: sched.CosineAnnealingLR(o, T_max=3000, eta_min=0.001)),
    ("exp:gamma=0.999", lambda o: sched.ExponentialLR(o, gamma=0.999)),
    ("step:step_size=900,gamma=0.5", lambda o: sched.StepLR(o, step_size=900, gamma=0.5)),
    ("multistep:milestones=1000/4000,gamma=0.3", lambda o: sched.MultiStepLR(o, [1000, 4000], gamma=0.3)),
    ("cosine-restarts:T_0=700,T_mult=2", lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=700, T_mult=2)),
    ("linear:start_factor=1,end_factor=0.1,total_iters=5000", lambda o: sched.LinearLR(o, 1.0, 0.1, 5000)),
    ("poly:total_iters=6000,power=2", lambda o: sched.PolynomialLR(o, total_iters=6000, power=2.0)),
]


@pytest.mark.parametrize(("spec", "make"), WARMED, ids=[w[0].split(":")[0] + str(i) for i, w in enumerate(WARMED)])
@pytest.mark.parametrize(("warmup", "start"), [(500, 0.01), (1, 0.5), (2000, 1.0)])
def test_warmup_on_every_kind_is_sequential_lr(spec: str, make, warmup: int, start: float) -> None:
    ours_ = ours(f"{spec},warmup={warmup},warmup_start={start!r}", 0.05)
    assert_close(ours_, torch_per_epoch(warmed(warmup, start, make), 0.05), scale=0.05)


# -- in steps, per batch; per epoch with several steps an epoch; after a switch --------------------------
def test_steps_are_exact_at_their_own_steps_whatever_the_epoch() -> None:
    """``step_size=1000steps`` with 7 steps an epoch drops at steps 1000, 2000, 3000: a twin stepped per batch."""
    theirs = torch_per_epoch(lambda o: sched.StepLR(o, step_size=1000, gamma=0.5), 0.1)
    assert_close(ours("step:step_size=1000steps,gamma=0.5", 0.1, k=7), theirs)
    theirs = torch_per_epoch(warmed(300, 0.1, lambda o: sched.CosineAnnealingLR(o, T_max=5000)), 0.1)
    assert_close(ours("cosine:T_max=5000steps,warmup=300steps,warmup_start=0.1", 0.1, k=468), theirs, scale=0.1)
    theirs = torch_per_epoch(lambda o: sched.MultiStepLR(o, [1000, 3000], gamma=0.1), 0.1)
    assert_close(ours("multistep:milestones=1000steps/3000steps", 0.1, k=13), theirs)


@pytest.mark.parametrize(
    ("spec", "make"),
    [
        ("linear:total_iters=30", lambda o: sched.LinearLR(o, 1.0, 0.0, 30)),
        ("poly:total_iters=30,power=2", lambda o: sched.PolynomialLR(o, 30, 2.0)),
        ("multistep:milestones=5/17/29", lambda o: sched.MultiStepLR(o, [5, 17, 29])),
        ("cosine:T_max=20,warmup=3,warmup_start=0.1", warmed(3, 0.1, lambda o: sched.CosineAnnealingLR(o, 20))),
        (
            "wsd:warmup=3,stable=10,decay=8",
            lambda o: hf.get_wsd_schedule(o, 3, 8, num_stable_steps=10, decay_type="1-sqrt"),
        ),
    ],
)
def test_per_epoch_runs_hold_each_epochs_lr(spec: str, make) -> None:
    """Epoch keys with 9 steps an epoch, updated per epoch: the twin stepped once per epoch."""
    k = 9
    theirs = np.repeat(torch_per_epoch(make, 0.1, n=40), k)
    assert_close(ours(spec, 0.1, n=40 * k, k=k, per_epoch=True), theirs, scale=0.1)


SWITCHED = [
    ("linear:total_iters=2000", lambda o: sched.LinearLR(o, 1.0, 0.0, 2000)),
    ("poly:total_iters=2000,power=0.5", lambda o: sched.PolynomialLR(o, 2000, 0.5)),
    ("multistep:milestones=100/900", lambda o: sched.MultiStepLR(o, [100, 900])),
    ("onecycle:total_steps=2000", lambda o: sched.OneCycleLR(o, 0.0, total_steps=2000, cycle_momentum=False)),
    ("inverse-sqrt:warmup=50", lambda o: hf.get_inverse_sqrt_schedule(o, 50)),
    (
        "wsd:stable=500,decay=1000,warmup=100",
        lambda o: hf.get_wsd_schedule(o, 100, 1000, num_stable_steps=500, decay_type="1-sqrt"),
    ),
    ("cooldown:length=1500", lambda o: hf.get_wsd_schedule(o, 0, 1500, num_stable_steps=0, decay_type="1-sqrt")),
    ("cosine:T_max=2000,warmup=100", lambda o: hf.get_cosine_schedule_with_warmup(o, 100, 2100)),
]


@pytest.mark.parametrize(("spec", "make"), SWITCHED, ids=[s[0].split(":")[0] for s in SWITCHED])
def test_after_a_switch_each_kind_is_its_twin_built_on_the_lr_in_force(spec: str, make) -> None:
    timeline = Timeline.start("exp:gamma=0.99", lr=0.1, steps_per_epoch=1, total_steps=10_000).switch(1234, spec)
    lr_in_force = timeline.lr_at(1233)
    if spec.startswith("onecycle"):  # OneCycleLR's max_lr is given, not the optimizer's
        make = lambda o: sched.OneCycleLR(o, lr_in_force, total_steps=2000, cycle_momentum=False)  # noqa: E731
    n = 1500 if spec.startswith("cooldown") else 2000
    assert_close(timeline.lrs(np.arange(1234, 1234 + n)), torch_per_epoch(make, lr_in_force, n=n), scale=lr_in_force)


# -- several param groups, by each twin's own rule ----------------------------------------------------
GROUP_LRS = (0.1, 0.01, 0.3)


def torch_groups(make, lrs: tuple[float, ...], n: int) -> np.ndarray:
    """Each group's LR at steps 0..n-1 under the twin; the optimizer's default LR is group 0's (transformers'
    polynomial decay takes ``lr_end`` relative to ``optimizer.defaults["lr"]``)."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    opt = torch.optim.SGD(groups, lr=lrs[0])
    scheduler = make(opt)
    opt.step()
    out = np.empty((n, len(lrs)))
    for i in range(n):
        out[i] = [g["lr"] for g in opt.param_groups]
        scheduler.step()
    return out


GROUPED = [
    ("linear:start_factor=0.5,end_factor=0.1,total_iters=150", lambda o: sched.LinearLR(o, 0.5, 0.1, 150)),
    ("multistep:milestones=30/90,gamma=0.5", lambda o: sched.MultiStepLR(o, [30, 90], gamma=0.5)),
    ("cosine:T_max=120,eta_min=0.002,warmup=20,warmup_start=0.1",
     warmed(20, 0.1, lambda o: sched.CosineAnnealingLR(o, T_max=120, eta_min=0.002))),
    # transformers' LambdaLR kinds: one factor for every group, so lr_end (eta_min) scales with each group's LR
    ("poly:total_iters=150,power=2,eta_min=0.01,warmup=20",
     lambda o: hf.get_polynomial_decay_schedule_with_warmup(o, 20, 170, lr_end=0.01, power=2.0)),
    ("wsd:warmup=20,stable=50,decay=100,min_lr_ratio=0.1",
     lambda o: hf.get_wsd_schedule(o, 20, 100, num_stable_steps=50, decay_type="1-sqrt", min_lr_ratio=0.1)),
    ("inverse-sqrt:warmup=20", lambda o: hf.get_inverse_sqrt_schedule(o, 20)),
]  # fmt: skip


@pytest.mark.parametrize(("spec", "make"), GROUPED, ids=[g[0].split(":")[0] + str(i) for i, g in enumerate(GROUPED)])
def test_every_param_group_follows_its_twins_rule(spec: str, make) -> None:
    """``poly``'s transformers twin takes ``lr_end`` relative to ``optimizer.defaults["lr"]`` (group 0's)."""
    assert_close(lrwatch_groups(spec, GROUP_LRS, 200), torch_groups(make, GROUP_LRS, 200), scale=max(GROUP_LRS))


def test_onecycle_gives_every_group_its_one_max_lr() -> None:
    """``OneCycleLR(max_lr=0.1)`` sets every group's LR alike, whatever each group's own LR was."""
    make = lambda o: sched.OneCycleLR(o, max_lr=0.1, total_steps=200, cycle_momentum=False)  # noqa: E731
    assert_close(lrwatch_groups("onecycle:total_steps=200", GROUP_LRS, 200), torch_groups(make, GROUP_LRS, 200))


@pytest.mark.parametrize(("spec", "make"), GROUPED[:4], ids=[g[0].split(":")[0] for g in GROUPED[:4]])
def test_after_a_switch_each_group_follows_its_twin_from_its_own_lr(spec: str, make) -> None:
    ours_ = lrwatch_groups("exp:gamma=0.97", GROUP_LRS, 150, switch=(30, spec))
    before = tuple(float(v) for v in ours_[29])
    assert_close(ours_[30:], torch_groups(make, before, 120), scale=max(GROUP_LRS))


# -- plateau: ReduceLROnPlateau fed the same metric --------------------------------------------------------
@settings(max_examples=10, deadline=None)
@given(
    metrics=st.lists(st.floats(0.0, 10.0), min_size=5, max_size=60),
    factor=st.floats(0.05, 0.9),
    patience=st.integers(0, 4),
    cooldown=st.integers(0, 3),
    mode=st.sampled_from(["min", "max"]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    min_lr=st.sampled_from([0.0, 0.001]),
)
def test_plateau_is_reduce_lr_on_plateau_per_group(
    metrics: list[float], factor: float, patience: int, cooldown: int, mode: str, threshold_mode: str, min_lr: float
) -> None:
    from lrwatch.run.engine import Engine

    k = 3
    opt = _grouped(GROUP_LRS)
    theirs = sched.ReduceLROnPlateau(opt, mode=mode, factor=factor, patience=patience, threshold_mode=threshold_mode,
                                     cooldown=cooldown, min_lr=min_lr)  # fmt: skip
    spec = (f"plateau:factor={factor!r},patience={patience},cooldown={cooldown},mode={mode},"
            f"threshold_mode={threshold_mode},min_lr={min_lr!r}")  # fmt: skip
    engine = Engine(_grouped(GROUP_LRS), Timeline.start(spec, lr=GROUP_LRS[0], steps_per_epoch=k))
    engine.begin()
    for metric in metrics:
        for _ in range(k):
            assert_close(np.array([g["lr"] for g in engine.optimizer.param_groups]), np.array(
                [g["lr"] for g in opt.param_groups]))  # fmt: skip
            engine.step(1.0)
        engine.end_epoch(val_loss=metric)
        theirs.step(metric)
    reductions = [e for e in engine.events_since(0) if e.kind == "plateau"]
    assert len(reductions) == engine.timeline.segments[-1].schedule.params()["reduced"]


# -- the command line reads the same numbers ---------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "make"),
    [
        (
            "wsd:warmup=100,decay=300,decay_type=cosine",
            lambda o: hf.get_wsd_schedule(o, 100, 300, num_training_steps=2000),
        ),
        ("onecycle", lambda o: sched.OneCycleLR(o, 0.1, total_steps=2000, cycle_momentum=False)),
        ("cosine:warmup=100", lambda o: hf.get_cosine_schedule_with_warmup(o, 100, 2000)),
        ("linear:warmup=100", lambda o: hf.get_linear_schedule_with_warmup(o, 100, 2000)),
    ],
)
def test_lrwatch_schedule_csv_is_the_twin(capsys: pytest.CaptureFixture[str], spec: str, make) -> None:
    from lrwatch.cli import main

    code = main(["schedule", spec, "--lr", "0.1", "--epochs", "2000", "--steps-per-epoch", "1", "--format", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert code == 0 and len(rows) == 2000
    assert_close(np.array([float(r["lr"]) for r in rows]), torch_per_epoch(make, 0.1, n=2000), scale=0.1)
