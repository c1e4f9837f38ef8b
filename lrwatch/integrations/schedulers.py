"""A PyTorch scheduler (or the transformers schedule behind a ``LambdaLR``) as the lrwatch spec that gives the
same LRs, so that lrwatch can keep a framework's or a script's own schedule, LR for LR, and preview it ahead.

    spec = spec_of_scheduler(scheduler)                    # e.g. "cosine:T_max=900steps,warmup=100steps,lr=0.001"
    spec = spec_of_scheduler(scheduler, interval="epoch")  # stepped once per epoch: times in epochs

:func:`spec_of_scheduler` reads the scheduler's own settings (and, for transformers' ``get_*_schedule*``, the
keywords of the ``functools.partial`` it wraps in its ``LambdaLR``), so the spec is exact to it (the twins are
tested in ``tests/test_twins.py``). The spec carries the schedule's starting LR (``lr=``, its ``base_lrs[0]``; a
``OneCycleLR``'s ``max_lr``), not the optimizer's LR now, which is 0 at a warmup's first step. Its time origin
is the scheduler's step 0. ``None``: lrwatch has no equivalent (a ``LambdaLR`` of your own, ``CyclicLR``, a
``ChainedScheduler``, a ``SequentialLR`` that is not warmup-then-one, a ``MultiStepLR`` with a repeated
milestone): keep stepping it, and let lrwatch take over at the first switch.

Used by the Lightning and HF Trainer callbacks, and by ``lrwatch run`` for a script's own scheduler
(:mod:`lrwatch.integrations.script_schedule`: the schedule shown until a switch).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from lrwatch.schedule.base import fmt
from lrwatch.schedule.spec import SpecError, parse_spec, resolve, spec_of

__all__ = ["spec_of_scheduler"]


def spec_of_scheduler(scheduler: Any, *, interval: str = "step") -> str | None:
    """The lrwatch spec equal to ``scheduler`` from its step 0, with ``lr=`` its starting LR; ``None`` if none is.

    ``interval``: how often the scheduler is stepped: ``"step"`` (after every optimizer step; times are
    written ``Nsteps``) or ``"epoch"`` (once per epoch; times in epochs, for a run updated per epoch).
    """
    if interval not in ("step", "epoch"):
        raise ValueError(f"interval must be 'step' or 'epoch', not {interval!r}")
    try:
        found = _spec(scheduler, interval)
    except (AttributeError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    if found is None:
        return None
    body, lr = found
    try:
        shown = spec_of(resolve(parse_spec(body)))  # every time is given; the keys at their defaults drop out
    except SpecError:
        return None  # a value outside lrwatch's ranges: no equivalent
    return str(replace(shown, lr=lr if lr > 0 else None))


def _t(value: float, interval: str) -> str:
    return f"{fmt(value)}steps" if interval == "step" else fmt(value)


def _join(kind: str, params: dict[str, Any]) -> str:
    return kind + (":" + ",".join(f"{k}={v}" for k, v in params.items()) if params else "")


def _spec(s: Any, interval: str) -> tuple[str, float] | None:
    from torch.optim import lr_scheduler as torch_sched

    if isinstance(s, torch_sched.ReduceLROnPlateau):
        return _plateau(s), float(s.optimizer.param_groups[0]["lr"])
    if isinstance(s, torch_sched.SequentialLR):
        return _sequential(s, interval)
    if isinstance(s, torch_sched.OneCycleLR):
        return _onecycle(s, interval)
    base = float(s.base_lrs[0])
    t = lambda v: _t(v, interval)  # noqa: E731
    if isinstance(s, torch_sched.LambdaLR):
        body = _transformers(s, interval)
        return (body, base) if body is not None else None
    simple = {
        torch_sched.StepLR: lambda: _join("step", {"step_size": t(s.step_size), "gamma": fmt(s.gamma)}),
        torch_sched.ExponentialLR: lambda: _join("exp", {"gamma": fmt(s.gamma), "decay_steps": t(1)}),
        torch_sched.CosineAnnealingLR: lambda: _join("cosine", {"T_max": t(s.T_max), "eta_min": fmt(s.eta_min)}),
        torch_sched.CosineAnnealingWarmRestarts: lambda: _join(
            "cosine-restarts", {"T_0": t(s.T_0), "T_mult": s.T_mult, "eta_min": fmt(s.eta_min)}
        ),
        torch_sched.LinearLR: lambda: _join("linear", {
            "start_factor": fmt(s.start_factor), "end_factor": fmt(s.end_factor), "total_iters": t(s.total_iters)}),
        torch_sched.PolynomialLR: lambda: _join("poly", {"total_iters": t(s.total_iters), "power": fmt(s.power)}),
        torch_sched.MultiStepLR: lambda: _multistep(s, interval),
        torch_sched.ConstantLR: lambda: "constant" if s.factor == 1 or s.total_iters == 0 else None,
    }  # fmt: skip
    make = simple.get(type(s))
    body = make() if make is not None else None
    return (body, base) if body is not None else None


def _multistep(s: Any, interval: str) -> str | None:
    counts = Counter(s.milestones)
    if any(n > 1 for n in counts.values()):
        return None  # a repeated milestone multiplies by gamma twice: no lrwatch equivalent
    milestones = "/".join(_t(m, interval) for m in sorted(counts))
    return _join("multistep", {"milestones": milestones, "gamma": fmt(s.gamma)})


def _plateau(s: Any) -> str | None:
    if s.eps != 1e-8 or len(set(s.min_lrs)) > 1:
        return None
    return _join("plateau", {
        "factor": fmt(s.factor), "patience": s.patience, "threshold": fmt(s.threshold),
        "threshold_mode": s.threshold_mode, "cooldown": s.cooldown, "min_lr": fmt(s.min_lrs[0]), "mode": s.mode,
    })  # fmt: skip


def _onecycle(s: Any, interval: str) -> tuple[str, float] | None:
    group = s.optimizer.param_groups[0]
    max_lr, initial, final = float(group["max_lr"]), float(group["initial_lr"]), float(group["min_lr"])
    total = int(s.total_steps)
    anneal = getattr(s, "_anneal_func_type", None) or getattr(s.anneal_func, "__name__", "cos")
    params = {
        "total_steps": _t(total, interval),
        "pct_start": fmt((s._schedule_phases[0]["end_step"] + 1) / total),  # OneCycleLR keeps only its phases
        "anneal": "linear" if "linear" in anneal else "cos",
        "div_factor": fmt(max_lr / initial),
        "final_div_factor": fmt(initial / final),
        "three_phase": int(len(s._schedule_phases) == 3),
    }
    return _join("onecycle", params), max_lr


def _sequential(s: Any, interval: str) -> tuple[str, float] | None:
    """``SequentialLR([LinearLR(start_factor=f, end_factor=1, total_iters=W), X], milestones=[W])``: X with a
    warmup of W from ``f``."""
    from torch.optim import lr_scheduler as torch_sched

    schedulers, milestones = s._schedulers, s._milestones
    if len(schedulers) != 2 or len(milestones) != 1:
        return None
    ramp, then = schedulers
    w = milestones[0]
    if not (isinstance(ramp, torch_sched.LinearLR) and ramp.end_factor == 1 and ramp.total_iters == w):
        return None
    inner = _spec(then, interval)
    if inner is None or "warmup" in inner[0]:
        return None
    body, base = inner
    warmup = {"warmup": _t(w, interval), "warmup_start": fmt(ramp.start_factor)}
    return body + ("," if ":" in body else ":") + ",".join(f"{k}={v}" for k, v in warmup.items()), base


def _transformers(s: Any, interval: str) -> str | None:
    """The transformers schedule behind a ``LambdaLR`` (every group's lambda the same ``functools.partial``)."""
    lambdas = s.lr_lambdas
    first = lambdas[0]
    if any(f is not first for f in lambdas[1:]):
        return None
    func = getattr(first, "func", first)
    name, kw = getattr(func, "__name__", ""), dict(getattr(first, "keywords", None) or {})
    t = lambda v: _t(v, interval)  # noqa: E731
    w = kw.get("num_warmup_steps", 0)
    warm = {"warmup": t(w)} if w else {}
    if name == "_get_constant_lambda":
        return "constant"
    if name == "_get_constant_schedule_with_warmup_lr_lambda":
        return _join("constant", warm)
    n = kw.get("num_training_steps")
    if name == "_get_linear_schedule_with_warmup_lr_lambda" and n > w:
        return _join("linear", {"total_iters": t(n - w), **warm})
    if name == "_get_cosine_schedule_with_warmup_lr_lambda" and n > w:
        eta_min = kw.get("min_lr_rate", 0.0) * float(s.base_lrs[0])  # one factor per group: exact for group 0
        return _join("cosine", {"T_max": t((n - w) / (2 * kw["num_cycles"])), "eta_min": fmt(eta_min), **warm})
    if name == "_get_cosine_with_hard_restarts_schedule_with_warmup_lr_lambda" and n > w:
        return _join("cosine-restarts", {"T_0": t((n - w) / kw["num_cycles"]), **warm})
    if name == "_get_polynomial_decay_schedule_with_warmup_lr_lambda" and n > w:
        params = {"total_iters": t(n - w), "power": fmt(kw["power"]), "eta_min": fmt(kw["lr_end"])}
        return _join("poly", {**params, **warm})
    if name == "_get_inverse_sqrt_schedule_lr_lambda":
        return _join("inverse-sqrt", {"timescale": t(kw["timescale"]), **warm})
    if name == "_get_wsd_scheduler_lambda" and kw.get("warmup_type", "linear") == "linear":
        if kw["decay_type"] == "cosine" and kw.get("num_cycles", 0.5) != 0.5:
            return None
        ratio = kw["min_lr_ratio"]
        params = {"decay": t(kw["num_decay_steps"]), "stable": t(kw["num_stable_steps"]),
                  "decay_type": kw["decay_type"], "min_lr_ratio": fmt(ratio)}  # fmt: skip
        return _join("wsd", {**params, **warm})  # its warmup starts at min_lr_ratio, as lrwatch's wsd
    return None
