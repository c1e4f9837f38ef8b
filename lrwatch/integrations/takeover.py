"""The script's own LR schedulers, found on its optimizer, and silenced once lrwatch takes the LR over.

``lrwatch run`` watches a script that never calls ``lrwatch.watch()``: its scheduler keeps the LR until the
first switch. From then on lrwatch sets the LR before every ``optimizer.step()``; the scheduler object would
go on computing LRs nobody applies, and the script's own reports (``scheduler.get_last_lr()``, a
``ReduceLROnPlateau``'s halvings) would lie. So, as the HF integration does with the Trainer's scheduler,
every scheduler of that optimizer is taken over on that one object: its ``step()`` does nothing, and its
``get_last_lr()`` and ``_last_lr`` report the LR lrwatch set (:meth:`TakenOver.report`, at every step
boundary). A warning says what was taken over: the schedulers by name, or, with none, the LR the script
sets by hand (``param_group["lr"] = ...``, as nanoGPT's ``get_lr`` does), overridden before every step.

PyTorch keeps no list of an optimizer's schedulers; each holds ``scheduler.optimizer``. They are found by
``gc.get_referrers`` (what refers to the optimizer, and what holds that), once per take-over.
"""

from __future__ import annotations

import gc
from typing import Any

import torch


def schedulers_of(optimizer: Any) -> list[Any]:
    """The PyTorch LR schedulers (``LRScheduler``, ``ReduceLROnPlateau``) stepping ``optimizer``; a
    ``SequentialLR`` and the schedulers it chains each count."""
    kinds = (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    found: dict[int, Any] = {}
    for holder in gc.get_referrers(optimizer):
        # an object whose attributes live inline refers to the optimizer itself; an older one, through its __dict__
        owners = gc.get_referrers(holder) if isinstance(holder, dict) else [holder]
        for owner in owners:
            if isinstance(owner, kinds) and getattr(owner, "optimizer", None) is optimizer:
                found.setdefault(id(owner), owner)
    return list(found.values())


def scheduler_names(schedulers: list[Any]) -> str:
    """``SequentialLR (LinearLR, CosineAnnealingLR)``: the outer schedulers, with those they chain."""
    inner = {id(s) for outer in schedulers for s in getattr(outer, "_schedulers", ())}
    names = []
    for scheduler in schedulers:
        if id(scheduler) in inner:
            continue
        chained = [type(s).__name__ for s in getattr(scheduler, "_schedulers", ())]
        names.append(type(scheduler).__name__ + (f" ({', '.join(chained)})" if chained else ""))
    return ", ".join(names)


def _no_step(*_args: Any, **_kwargs: Any) -> None:
    """A taken-over scheduler's ``step``: lrwatch sets the LR now."""


class TakenOver:
    """The script's schedulers of ``optimizer``, silenced: ``step()`` does nothing, ``get_last_lr()`` reports
    the LR lrwatch set (each param group's, as PyTorch's does)."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        self.schedulers = schedulers_of(optimizer)
        for scheduler in self.schedulers:
            scheduler.step = _no_step  # on this object only: the class and other schedulers are untouched
            scheduler.get_last_lr = self.lrs
        self.report()

    def lrs(self) -> list[Any]:
        """What ``get_last_lr()`` returns now: the LR lrwatch set in each param group."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def report(self) -> None:
        """Keep ``_last_lr`` (read by scripts and by PyTorch's own ``state_dict``) equal to lrwatch's LR."""
        lrs = self.lrs()
        for scheduler in self.schedulers:
            scheduler._last_lr = list(lrs)

    def message(self, step: int) -> str:
        """What the warning says was taken over, at ``step``."""
        if self.schedulers:
            return (
                f"taken over at step {step}: the script's {scheduler_names(self.schedulers)} no longer sets the LR "
                "(its step() does nothing; get_last_lr() reports the LR lrwatch sets)"
            )
        return (
            f"taken over at step {step}: the script steps no LR scheduler; any LR it sets by hand "
            "(param_group['lr'] = ...) is replaced by lrwatch's before every optimizer step"
        )
