"""``spec_of_scheduler``: a PyTorch scheduler, or the transformers schedule in a ``LambdaLR``, as the lrwatch spec
whose LRs are the scheduler's own, step for step (the mapping the frameworks' callbacks keep their schedule with)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers.optimization as hf
from torch.optim import lr_scheduler as sched

from lrwatch.integrations.schedulers import spec_of_scheduler
from lrwatch.schedule.timeline import Timeline
from tests.test_parity import assert_close

N = 1000  # transformers' schedules end at num_training_steps (hard restarts give 0 after it)
SCHEDULERS = [
    ("cosine:T_max=900steps,warmup=100steps,lr=0.1", lambda o: hf.get_cosine_schedule_with_warmup(o, 100, 1000)),
    ("linear:total_iters=900steps,warmup=100steps,lr=0.1", lambda o: hf.get_linear_schedule_with_warmup(o, 100, 1000)),
    ("constant:warmup=10steps,lr=0.1", lambda o: hf.get_constant_schedule_with_warmup(o, 10)),
    ("constant:lr=0.1", hf.get_constant_schedule),
    (None, lambda o: hf.get_polynomial_decay_schedule_with_warmup(o, 10, 1000, lr_end=1e-4, power=2.0)),
    ("inverse-sqrt:timescale=10steps,warmup=10steps,lr=0.1", lambda o: hf.get_inverse_sqrt_schedule(o, 10)),
    (None, lambda o: hf.get_wsd_schedule(o, 10, 200, num_training_steps=1000, min_lr_ratio=0.1)),
    (None, lambda o: hf.get_cosine_with_hard_restarts_schedule_with_warmup(o, 10, 1000, num_cycles=3)),
    (None, lambda o: hf.get_cosine_schedule_with_warmup(o, 50, 1000, num_cycles=1.5)),
    ("cosine:T_max=900steps,warmup=100steps,warmup_start=0.05,lr=0.1",
     lambda o: sched.SequentialLR(o, [sched.LinearLR(o, 0.05, 1.0, 100), sched.CosineAnnealingLR(o, 900)], [100])),
    (None, lambda o: sched.OneCycleLR(o, 0.5, total_steps=N, pct_start=0.25, anneal_strategy="linear")),
    (None, lambda o: sched.OneCycleLR(o, 0.5, total_steps=N, three_phase=True, div_factor=10)),
    ("linear:start_factor=0.2,end_factor=1,total_iters=300steps,lr=0.1", lambda o: sched.LinearLR(o, 0.2, 1.0, 300)),
    ("multistep:milestones=100steps/700steps,gamma=0.1,lr=0.1", lambda o: sched.MultiStepLR(o, [700, 100])),
    (None, lambda o: sched.PolynomialLR(o, total_iters=800, power=0.5)),
    (None, lambda o: sched.StepLR(o, step_size=250, gamma=0.3)),
    (None, lambda o: sched.ExponentialLR(o, gamma=0.998)),
    (None, lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=100, T_mult=2, eta_min=1e-3)),
]  # fmt: skip


def stepped(make, n: int = N) -> tuple[object, np.ndarray]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make(opt)
    spec = spec_of_scheduler(scheduler)  # at step 0, as a callback sees it
    opt.step()
    out = np.empty(n)
    for i in range(n):
        out[i] = opt.param_groups[0]["lr"]
        scheduler.step()
    return spec, out


@pytest.mark.parametrize(("expected", "make"), SCHEDULERS, ids=range(len(SCHEDULERS)))
def test_the_spec_gives_the_schedulers_own_lrs(expected: str | None, make) -> None:
    spec, theirs = stepped(make)
    assert spec is not None
    if expected is not None:
        assert spec == expected
    ours = Timeline.start(spec, lr=123.0, steps_per_epoch=7, total_steps=N).lrs(np.arange(N))  # lr= wins
    assert_close(ours, theirs, scale=0.5)


def test_a_warmups_zero_lr_is_not_the_base() -> None:
    """At a warmup's first step the optimizer's LR is 0: the spec starts from the schedule's peak."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    scheduler = hf.get_linear_schedule_with_warmup(opt, 100, 1000)
    assert opt.param_groups[0]["lr"] == 0.0 and spec_of_scheduler(scheduler).endswith(",lr=0.0003")


def test_stepped_per_epoch_the_spec_is_in_epochs() -> None:
    k = 6
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = sched.SequentialLR(opt, [sched.LinearLR(opt, 0.1, 1.0, 3), sched.CosineAnnealingLR(opt, 20)], [3])
    spec = spec_of_scheduler(scheduler, interval="epoch")
    assert spec == "cosine:T_max=20,warmup=3,warmup_start=0.1,lr=0.1"
    opt.step()
    theirs = []
    for _ in range(30):
        theirs.append(opt.param_groups[0]["lr"])
        scheduler.step()
    ours = Timeline.start(spec, lr=1.0, steps_per_epoch=k, total_steps=30 * k, per_epoch=True).lrs(np.arange(30 * k))
    assert_close(ours, np.repeat(theirs, k), scale=0.1)


@pytest.mark.parametrize(
    "make",
    [
        lambda o: sched.LambdaLR(o, lambda e: 0.9**e),
        lambda o: sched.CyclicLR(o, 0.01, 0.1),
        lambda o: sched.MultiStepLR(o, [10, 10, 20]),  # a repeated milestone: gamma twice
        lambda o: sched.SequentialLR(o, [sched.LinearLR(o, 0.1, 1.0, 5), sched.ExponentialLR(o, 0.9)], [10]),
        lambda o: sched.ConstantLR(o, factor=0.5, total_iters=4),
        lambda o: sched.ChainedScheduler([sched.ExponentialLR(o, 0.9), sched.StepLR(o, 2)]),
    ],
)
def test_schedulers_without_an_equivalent_give_none(make) -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    assert spec_of_scheduler(make(opt)) is None


def test_reduce_on_plateau_becomes_plateau() -> None:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = sched.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2, min_lr=1e-4)
    assert spec_of_scheduler(scheduler) == "plateau:factor=0.5,patience=2,min_lr=0.0001,mode=max,lr=0.1"
