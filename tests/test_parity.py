"""Every schedule equals its PyTorch twin to a relative error of 1e-9 over 10,000+ steps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler

from lrwatch.protocol.commands import Switch
from lrwatch.schedule.cosine import CosineAnnealing, CosineWarmRestarts
from lrwatch.schedule.exp import ExponentialDecay
from lrwatch.schedule.step import StepDecay
from lrwatch.schedule.timeline import Timeline

N_STEPS = 10_000
RTOL = 1e-9
ATOL = 1e-300  # only denormals (gamma^t underflowing) are compared absolutely

base_lrs = st.floats(min_value=1e-6, max_value=10.0)
gammas = st.floats(min_value=1e-3, max_value=1.0)
eta_mins = st.one_of(st.just(0.0), st.floats(min_value=0.0, max_value=1e-3))


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def torch_per_epoch(make, lr: float, n: int = N_STEPS) -> np.ndarray:
    """LR in force at epochs 0..n-1 with one ``scheduler.step()`` per epoch."""
    opt = _optimizer(lr)
    sched = make(opt)
    opt.step()  # once, so the scheduler does not warn; later steps would only cost time
    out = np.empty(n)
    for i in range(n):
        out[i] = opt.param_groups[0]["lr"]
        sched.step()
    return out


def assert_close(ours: np.ndarray, theirs: np.ndarray, scale: float | None = None) -> None:
    """Relative error ≤ RTOL; with ``scale``, an absolute RTOL·scale too (for a schedule whose error is
    relative to its range, not to each value)."""
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL if scale is None else RTOL * scale)


@settings(max_examples=25, deadline=None)
@given(lr=base_lrs, gamma=gammas)
def test_exp_matches_exponential_lr(lr: float, gamma: float) -> None:
    theirs = torch_per_epoch(lambda o: lr_scheduler.ExponentialLR(o, gamma=gamma), lr)
    assert_close(ExponentialDecay(gamma).lr(lr, np.arange(N_STEPS)), theirs)


@settings(max_examples=25, deadline=None)
@given(lr=base_lrs, t_max=st.integers(1, 2000), eta_min=eta_mins)
@example(lr=1e-06, t_max=3, eta_min=0.0006530263075784867)  # eta_min > lr: PyTorch's recursion drifts by 2e-15
def test_cosine_matches_cosine_annealing_lr_past_t_max(lr: float, t_max: int, eta_min: float) -> None:
    """PyTorch's CosineAnnealingLR is recursive past its first step: its rounding error accumulates over
    10,000 steps relative to the schedule's range, so the comparison allows RTOL of max(lr, eta_min)."""
    theirs = torch_per_epoch(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), lr)
    assert_close(CosineAnnealing(t_max, eta_min).lr(lr, np.arange(N_STEPS)), theirs, scale=max(lr, eta_min))


@settings(max_examples=25, deadline=None)
@given(lr=base_lrs, step_size=st.integers(1, 500), gamma=gammas)
def test_step_matches_step_lr(lr: float, step_size: int, gamma: float) -> None:
    theirs = torch_per_epoch(lambda o: lr_scheduler.StepLR(o, step_size=step_size, gamma=gamma), lr)
    assert_close(StepDecay(step_size, gamma).lr(lr, np.arange(N_STEPS)), theirs)


@settings(max_examples=25, deadline=None)
@given(lr=base_lrs, t_0=st.integers(1, 300), t_mult=st.integers(1, 4), eta_min=eta_mins)
def test_restarts_match_warm_restarts_per_epoch(lr: float, t_0: int, t_mult: int, eta_min: float) -> None:
    make = lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=t_0, T_mult=t_mult, eta_min=eta_min)  # noqa: E731
    theirs = torch_per_epoch(make, lr)
    assert_close(CosineWarmRestarts(t_0, t_mult, eta_min).lr(lr, np.arange(N_STEPS)), theirs)


def _torch_restart_cycle_is_short(epoch: float, t_0: int, t_mult: int) -> bool:
    """Where PyTorch's ``int(math.log(...))`` puts a restart epoch one cycle early."""
    if t_mult == 1 or epoch < t_0:
        return False
    n = int(math.log(epoch / t_0 * (t_mult - 1) + 1, t_mult))
    return epoch - t_0 * (t_mult**n - 1) / (t_mult - 1) >= t_0 * t_mult**n


@settings(max_examples=25, deadline=None)
@given(
    lr=base_lrs,
    t_0=st.integers(1, 50),
    t_mult=st.integers(1, 3),
    eta_min=eta_mins,
    iters=st.integers(1, 40),
)
def test_restarts_match_warm_restarts_per_batch(lr: float, t_0: int, t_mult: int, eta_min: float, iters: int) -> None:
    """``scheduler.step(epoch + i / iters)`` before batch ``i`` equals lrwatch's LR at that step."""
    opt = _optimizer(lr)
    sched = lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=t_0, T_mult=t_mult, eta_min=eta_min)
    opt.step()
    spec = f"cosine-restarts:T_0={t_0},T_mult={t_mult},eta_min={eta_min!r}"
    timeline = Timeline.start(spec, lr=lr, steps_per_epoch=iters)
    theirs, quirk = np.empty(N_STEPS), np.zeros(N_STEPS, dtype=bool)
    for step in range(N_STEPS):
        epoch, i = divmod(step, iters)
        sched.step(epoch + i / iters)
        theirs[step] = opt.param_groups[0]["lr"]
        quirk[step] = _torch_restart_cycle_is_short(epoch + i / iters, t_0, t_mult)
    ours = timeline.lrs(np.arange(N_STEPS))
    assert_close(ours[~quirk], theirs[~quirk])
    # At the few restarts where PyTorch's log rounds down it gives eta_min; the restart gives lr0.
    np.testing.assert_allclose(ours[quirk], lr, rtol=RTOL)


def test_restart_quirk_case_is_a_true_restart() -> None:
    """T_mult=3 restarts at 121·T_0 (1+3+9+27+81 cycles); PyTorch's log says 4.999…"""
    sched = CosineWarmRestarts(T_0=1, T_mult=3)
    assert _torch_restart_cycle_is_short(121.0, 1, 3)
    t_cur, t_i = sched.cycle_position(np.array([120.5, 121.0, 121.5]))
    assert t_cur.tolist() == [80.5, 0.0, 0.5]
    assert t_i.tolist() == [81.0, 243.0, 243.0]


@pytest.mark.parametrize(
    ("spec", "make"),
    [
        ("exp:gamma=0.9", lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9)),
        ("cosine:T_max=25,eta_min=0.001", lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=25, eta_min=0.001)),
        ("step:step_size=7,gamma=0.5", lambda o: lr_scheduler.StepLR(o, step_size=7, gamma=0.5)),
        ("cosine-restarts:T_0=5,T_mult=2", lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=2)),
    ],
)
def test_per_epoch_timeline_is_the_plain_pytorch_loop(spec: str, make) -> None:
    """Per-epoch updates hold each epoch's LR for all its batches, like ``scheduler.step()`` per epoch."""
    k = 7
    timeline = Timeline.start(spec, lr=0.1, steps_per_epoch=k, per_epoch=True)
    theirs = np.repeat(torch_per_epoch(make, 0.1, n=200), k)
    assert_close(timeline.lrs(np.arange(200 * k)), theirs)


@settings(max_examples=20, deadline=None)
@given(start_lr=base_lrs, t_max=st.integers(1, 500), eta_min=eta_mins, k=st.integers(0, 3000))
def test_segment_equals_twin_built_on_its_start_lr(start_lr: float, t_max: int, eta_min: float, k: int) -> None:
    """A segment switched in at step k with LR L is, step for step, the twin on an optimizer with LR L."""
    timeline = Timeline.start("exp:gamma=1", lr=start_lr, steps_per_epoch=1)
    timeline = timeline.switch(k, f"cosine:T_max={t_max},eta_min={eta_min!r}")
    theirs = torch_per_epoch(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=t_max, eta_min=eta_min), start_lr, 2000)
    assert_close(timeline.lrs(np.arange(k, k + 2000)), theirs)


# -- several param groups: each follows PyTorch's own per-group rule --------------------------------
GROUP_LRS = (0.1, 0.01, 0.3)
TWINS = [
    ("cosine:T_max=40,eta_min=0.002", lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=40, eta_min=0.002)),
    ("cosine-restarts:T_0=7,T_mult=2,eta_min=0.004", lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, 7, 2, 4e-3)),
    ("step:step_size=9,gamma=0.5", lambda o: lr_scheduler.StepLR(o, step_size=9, gamma=0.5)),
    ("exp:gamma=0.95", lambda o: lr_scheduler.ExponentialLR(o, gamma=0.95)),
]


def _grouped(lrs: tuple[float, ...]) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs])


def torch_groups(make, lrs: tuple[float, ...], n: int) -> np.ndarray:
    """Each group's LR at steps 0..n-1 under PyTorch's scheduler, one ``scheduler.step()`` per step."""
    opt = _grouped(lrs)
    sched = make(opt)
    opt.step()
    out = np.empty((n, len(lrs)))
    for i in range(n):
        out[i] = [g["lr"] for g in opt.param_groups]
        sched.step()
    return out


def lrwatch_groups(spec: str, lrs: tuple[float, ...], n: int, switch: tuple[int, str] | None = None) -> np.ndarray:
    from lrwatch.run.engine import Engine

    opt = _grouped(lrs)
    engine = Engine(opt, Timeline.start(spec, lr=lrs[0], steps_per_epoch=1, total_steps=n, per_epoch=True))
    if switch is not None:
        engine.schedule_command(switch[0], Switch(switch[1]))
    engine.begin()
    out = np.empty((n, len(lrs)))
    for i in range(n):
        out[i] = [g["lr"] for g in opt.param_groups]
        engine.step(1.0)
    return out


@pytest.mark.parametrize(("spec", "make"), TWINS, ids=[t[0].split(":")[0] for t in TWINS])
def test_every_param_group_follows_its_own_pytorch_twin(spec: str, make) -> None:
    """Each group's own initial LR, the same absolute eta_min: not group 0's curve scaled."""
    ours, theirs = lrwatch_groups(spec, GROUP_LRS, 200), torch_groups(make, GROUP_LRS, 200)
    assert_close(ours, theirs, scale=max(GROUP_LRS))


@pytest.mark.parametrize(("spec", "make"), TWINS, ids=[t[0].split(":")[0] for t in TWINS])
def test_after_a_switch_each_group_follows_a_twin_started_at_its_own_lr(spec: str, make) -> None:
    ours = lrwatch_groups("exp:gamma=0.97", GROUP_LRS, 150, switch=(30, spec))
    before = tuple(float(v) for v in ours[29])  # continue: each group's twin starts from its own LR at step 29
    assert_close(ours[30:], torch_groups(make, before, 120), scale=max(GROUP_LRS))


def test_a_tensor_lr_is_filled_in_place() -> None:
    """Capturable and fused optimizers keep ``lr`` as a tensor: lrwatch updates that tensor, never replaces it."""
    from lrwatch.run.engine import Engine

    lr = torch.tensor(0.01)
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=lr, foreach=False)
    engine = Engine(opt, Timeline.start("exp:gamma=0.9", lr=0.01, steps_per_epoch=1, total_steps=20, per_epoch=True))
    engine.begin()
    seen = []
    for _ in range(20):
        seen.append(float(opt.param_groups[0]["lr"]))
        opt.param_groups[0]["params"][0].grad = torch.ones(3)
        opt.step()
        engine.step(1.0)
    assert opt.param_groups[0]["lr"] is lr
    assert_close(np.array(seen), (0.01 * 0.9 ** np.arange(20)).astype(np.float32))  # to the tensor's float32
    assert not any(e.kind == "warning" for e in engine.events_since(0))
