"""``lrwatch run train.py`` on a plain PyTorch script that never calls ``lrwatch.watch()``: zero added lines.

At the script's first ``optimizer.step()``, lrwatch watches that optimizer (``watch(drive_lr=False,
take_over=True)``): the script's own scheduler keeps the LR, and each step's row carries the LR the
step used and the loss it was computed from. The first switch hands the LR to lrwatch, which then
sets it before every step (a ``warning`` event says it took over). ``q`` (or a signal) stops the
script at a step boundary: :class:`RunStopped` is raised out of ``optimizer.step()`` and the script
unwinds through its own ``finally`` blocks.

How, and why each piece:

- PyTorch's global optimizer hooks (``register_optimizer_step_pre_hook``/``_post_hook``, public) see
  every ``optimizer.step()`` of every optimizer: the pre-hook starts the watch, the post-hook is
  ``monitor.step(loss)``.
- The loss is the scalar that ``backward()`` was called on (the mean of them, with gradient
  accumulation), kept on its device: ``Monitor.step`` copies GPU losses without a per-step sync.
  PyTorch has no hook for "backward was called on this tensor", so ``torch.autograd.backward`` (which
  ``Tensor.backward`` calls) is wrapped, only inside ``lrwatch run``, and restored when the script ends.
- The steps per epoch come from the DataLoader the script was iterating at its first step
  (``len(loader)``): ``DataLoader.__iter__`` is wrapped the same way. ``--steps-per-epoch`` wins;
  with neither, an epoch is one step and the x axis counts steps.
- The run's length: ``--epochs``, else a ``OneCycleLR``'s ``total_steps`` found among the optimizer's
  schedulers (``gc.get_referrers``, once), else unknown.

A script that calls ``lrwatch.watch()`` (or uses the Lightning or HF callback) is not hooked a second
time: the watch it made is left alone. Several optimizers: the first that steps is watched, a warning says so.
"""

from __future__ import annotations

import gc
import math
import sys
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import lrwatch
from lrwatch.live.host import current_host


class RunStopped(BaseException):
    """Raised out of ``optimizer.step()`` when the run stopped (``q``, a signal, a divergence stop)."""


def _scalar(tensors: Any) -> Any:
    """The one-element tensor ``backward()`` was called on, or None (a vector with explicit gradients)."""
    first = tensors[0] if isinstance(tensors, (list, tuple)) and tensors else tensors
    if isinstance(first, torch.Tensor) and first.numel() == 1:
        return first.detach()
    return None


def total_from_schedulers(optimizer: Any) -> int | None:
    """``total_steps`` of a ``OneCycleLR`` on ``optimizer``: the one scheduler whose length is in steps."""
    for holder in gc.get_referrers(optimizer):
        # an object whose attributes live inline refers to the optimizer itself; an older one, through its __dict__
        owners = gc.get_referrers(holder) if isinstance(holder, dict) else [holder]
        for owner in owners:
            if isinstance(owner, torch.optim.lr_scheduler.OneCycleLR) and owner.optimizer is optimizer:
                return int(owner.total_steps)
    return None


class AutoWatch:
    """The hooks of one ``lrwatch run``: a context manager around the script."""

    def __init__(self, *, steps_per_epoch: int | None = None, epochs: int | None = None) -> None:
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.monitor: lrwatch.Monitor | None = None
        self.optimizer: Any = None
        self.declined = False  # the script made its own watch: leave it alone
        self.others: set[int] = set()
        self.loader_length: int | None = None
        self._losses: list[Any] = []
        self._last_loss: Any = None
        self._handles: list[Any] = []
        self._saved: dict[str, Any] = {}
        self._missing_warned = False

    # -- install and remove -----------------------------------------------------------------
    def __enter__(self) -> AutoWatch:
        self._handles = [register_optimizer_step_pre_hook(self._before_step)]
        self._handles.append(register_optimizer_step_post_hook(self._after_step))
        self._saved = {"backward": torch.autograd.backward, "iter": torch.utils.data.DataLoader.__iter__}
        backward, loader_iter = self._saved["backward"], self._saved["iter"]
        watcher = self

        def recording_backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
            loss = _scalar(tensors)
            if loss is not None:
                watcher._losses.append(loss)
            return backward(tensors, *args, **kwargs)

        def measuring_iter(loader: Any) -> Any:
            try:
                watcher.loader_length = len(loader)
            except TypeError:  # an iterable dataset without a length
                watcher.loader_length = None
            return loader_iter(loader)

        torch.autograd.backward = recording_backward
        torch.utils.data.DataLoader.__iter__ = measuring_iter
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: Any) -> bool:
        for handle in self._handles:
            handle.remove()
        torch.autograd.backward = self._saved["backward"]
        torch.utils.data.DataLoader.__iter__ = self._saved["iter"]
        if self.monitor is None and not self.declined and kind is None:
            print(
                "lrwatch run: the script never called optimizer.step() (nor lrwatch.watch()): nothing to watch",
                file=sys.stderr,
                flush=True,
            )
        return kind is RunStopped  # the run stopped at a step boundary: the script ended as asked

    # -- the hooks --------------------------------------------------------------------------
    def _before_step(self, optimizer: Any, _args: Any, _kwargs: Any) -> None:
        if self.monitor is not None or self.declined:
            if optimizer is self.optimizer:
                self.monitor.engine.reapply_lr()  # global hooks run first: every hook of the script sees it
            elif self.monitor is not None:
                self._another(optimizer)
            return
        if current_host().engine is not None:
            self.declined = True  # the script called lrwatch.watch() itself, or a framework callback did
            return
        self.optimizer = optimizer
        steps_per_epoch = self.steps_per_epoch or self.loader_length  # None: unknown, the x axis counts steps
        total = (steps_per_epoch or 1) * self.epochs if self.epochs else total_from_schedulers(optimizer)
        self.monitor = lrwatch.watch(
            optimizer,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            drive_lr=False,
            take_over=True,
            config={"hooked": True, "steps_per_epoch_from": self._source_of_epoch()},
        )
        if not (self.steps_per_epoch or self.loader_length):
            self.monitor.warn("steps per epoch unknown (no DataLoader with a length): the x axis counts steps")

    def _source_of_epoch(self) -> str:
        if self.steps_per_epoch:
            return "--steps-per-epoch"
        return "len(DataLoader)" if self.loader_length else "unknown"

    def _another(self, optimizer: Any) -> None:
        if id(optimizer) not in self.others:
            self.others.add(id(optimizer))
            self.monitor.warn(
                f"a second optimizer ({type(optimizer).__name__}) steps too: lrwatch follows the first only"
                f" ({type(self.optimizer).__name__})"
            )

    def _after_step(self, optimizer: Any, _args: Any, _kwargs: Any) -> None:
        if self.monitor is None or optimizer is not self.optimizer:
            return
        losses, self._losses = self._losses, []
        if losses:
            loss = losses[0] if len(losses) == 1 else torch.stack([x.reshape(()) for x in losses]).mean()
            go_on = self.monitor.step(loss)
        else:
            if not self._missing_warned:
                self._missing_warned = True
                self.monitor.warn("an optimizer step with no backward() before it: its loss is left empty")
            go_on = self.monitor.engine.step(math.nan, watch_loss=False)
        if not go_on:
            raise RunStopped(self.monitor.engine.stop_reason or "stopped")
