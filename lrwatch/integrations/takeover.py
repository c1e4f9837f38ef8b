"""The script's own LR schedulers, found on its optimizer, and silenced once lrwatch takes the LR over.

``lrwatch run`` watches a script that never calls ``lrwatch.watch()``: its scheduler keeps the LR until the
first switch. From then on lrwatch sets the LR before every ``optimizer.step()``; the scheduler object would
go on computing LRs nobody applies, and the script's own reports (``scheduler.get_last_lr()``, a
``ReduceLROnPlateau``'s halvings) would lie. So, as the HF integration does with the Trainer's scheduler,
every scheduler of that optimizer is taken over, that one object only: its ``step()`` does nothing, and
its ``get_last_lr()`` and ``_last_lr`` report the LR lrwatch set (:meth:`TakenOver.report`, at every step
boundary); its ``state_dict()`` stays its own, so the script's checkpoints save and load as before. A
warning says what was taken over: the schedulers by name, or, with none, the LR the script sets by hand
(``param_group["lr"] = ...``, as nanoGPT's ``get_lr`` does), overridden before every step.

PyTorch keeps no list of an optimizer's schedulers; each holds ``scheduler.optimizer``. They are found by
``gc.get_referrers`` (what refers to the optimizer, and what holds that), once per take-over.
"""

from __future__ import annotations

import copyreg
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


class _TakenOver:
    """Mixed into a taken-over scheduler's class: ``step()`` does nothing, ``get_last_lr()`` reads the LR
    lrwatch set in each param group (as PyTorch's own reads its ``_last_lr``)."""

    _lrwatch_taken_over = True

    def step(self, *_args: Any, **_kwargs: Any) -> None:
        """lrwatch sets the LR now: the scheduler no longer does."""

    def get_last_lr(self) -> list[Any]:
        return [group["lr"] for group in self.optimizer.param_groups]

    def __reduce_ex__(self, _protocol: Any) -> Any:
        """Pickled (``torch.save(scheduler)``) as its own PyTorch class, which is what it is again on load:
        pickle's own protocol-0 reduction (``copyreg._reconstructor``), which loads without lrwatch."""
        return copyreg._reconstructor, (_original(type(self)), object, None), dict(self.__dict__)


_classes: dict[type, type] = {}


def _original(cls: type) -> type:
    return next(base for base in cls.__mro__[1:] if base is not _TakenOver)


def _taken_over_class(cls: type) -> type:
    """``cls`` with :class:`_TakenOver`'s methods first; same name, so the script's logs read as before."""
    if cls not in _classes:
        _classes[cls] = type(cls.__name__, (_TakenOver, cls), {"__qualname__": cls.__qualname__})
    return _classes[cls]


class TakenOver:
    """The script's schedulers of ``optimizer``, taken over: ``step()`` does nothing, ``get_last_lr()`` and
    ``_last_lr`` report the LR lrwatch set (each param group's, as PyTorch's do).

    The methods are replaced by giving each scheduler object a subclass of its own class (``__class__``),
    not by setting them on the instance: PyTorch's ``state_dict()`` is the instance's ``__dict__``, which a
    script saves in its checkpoints, and must hold nothing but the scheduler's own state."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer
        self.schedulers = schedulers_of(optimizer)
        for scheduler in self.schedulers:
            if not getattr(scheduler, "_lrwatch_taken_over", False):
                scheduler.__class__ = _taken_over_class(type(scheduler))
        self.report()

    def report(self) -> None:
        """Keep ``_last_lr`` (read by scripts, saved by ``state_dict()``) equal to lrwatch's LR."""
        lrs = [group["lr"] for group in self.optimizer.param_groups]
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
