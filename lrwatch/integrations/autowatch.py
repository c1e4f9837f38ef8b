"""``lrwatch run train.py`` on a plain PyTorch script that never calls ``lrwatch.watch()``: zero added lines.

At the script's first ``optimizer.step()``, lrwatch watches that optimizer (``watch(drive_lr=False,
take_over=True)``): the script's own scheduler keeps the LR, and each step's row carries the LR the
step used and the loss the script would report. The first switch hands the LR to lrwatch, which then
sets it before every step; the script's schedulers are taken over (:mod:`lrwatch.integrations.takeover`:
their ``step()`` does nothing, their ``get_last_lr()`` tells lrwatch's LR) and a ``warning`` event says
what was. ``q`` (or a signal) stops the script at a step boundary: :class:`RunStopped` is raised out of
``optimizer.step()`` and the script unwinds through its own ``finally`` blocks.

How, and why each piece:

- PyTorch's global optimizer hooks (``register_optimizer_step_pre_hook``/``_post_hook``, public) see
  every ``optimizer.step()`` of every optimizer: the pre-hook starts the watch, the post-hook is
  ``monitor.step(loss)``.
- **The loss of a step** is what the script would report for it. With gradient accumulation, the sum
  of the scalars ``backward()`` was called on since the last step: a script scales each micro-batch's loss
  by 1/N before ``backward()`` (nanoGPT, the PyTorch docs, the HF Trainer and Lightning all do), so the
  sum is the step's mean loss; a mean of the scaled values would be N times too small. PyTorch has no
  hook for "backward was called on this tensor", so ``torch.autograd.backward`` (which
  ``Tensor.backward`` calls) is wrapped, only inside ``lrwatch run``, and restored when the script ends.
  With ``optimizer.step(closure)`` (LBFGS), the loss ``step()`` returns: the closure's first value, the
  loss at the step's start, as every closure optimizer documents it (LBFGS evaluates it up to 20
  times). A pre-hook may hand ``step()`` new arguments, so the closure is wrapped to keep that value.
  Losses stay on their device: ``Monitor.step`` copies GPU losses without a per-step sync.
- The steps per epoch come from the DataLoader the script was iterating at its first step
  (``len(loader)``): ``DataLoader.__iter__`` is wrapped the same way. ``--steps-per-epoch`` wins;
  with neither, an epoch is one step and the x axis counts steps.
- The run's length: ``--epochs``, else a ``OneCycleLR``'s ``total_steps`` found among the optimizer's
  schedulers, else unknown.
- **The schedule shown** until a switch is the script's own (:mod:`lrwatch.integrations.script_schedule`): a
  scheduler lrwatch knows as its equal spec, another observed on a copy, or "set by the script".
- **Checkpoints** are the script's to save; ``k`` (and every stop, and the script's end) saves lrwatch's
  own state beside the run (``lrwatch_state.json``). ``lrwatch run --resume RUN_DIR`` continues that run
  directory and timeline at the step the optimizer's state says (Adam's per-parameter ``step``, loaded by
  the script from its own checkpoint before its first step), or ``--resume-step N``.

A script that calls ``lrwatch.watch()`` (or uses the Lightning or HF callback) is not hooked a second
time: the watch it made is left alone. Several optimizers: the first that steps is watched, a warning says so.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import lrwatch
from lrwatch.integrations.script_schedule import ScriptSchedules
from lrwatch.integrations.takeover import TakenOver, schedulers_of
from lrwatch.live.host import current_host
from lrwatch.run.checkpoints import save_state_file
from lrwatch.run.monitor import run_state


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
    for scheduler in schedulers_of(optimizer):
        if isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR):
            return int(scheduler.total_steps)
    return None


def optimizer_step_count(optimizer: Any) -> int | None:
    """The optimizer steps its state has counted (Adam's, AdamW's, ... per-parameter ``step``: the most of
    them), or None when it keeps no count (SGD) or holds no state yet (nothing was loaded)."""
    counts = []
    for state in optimizer.state.values():
        step = state.get("step") if isinstance(state, dict) else None
        if step is not None:
            counts.append(int(step.item() if isinstance(step, torch.Tensor) else step))
    return max(counts) if counts else None


def total_grad_norm(optimizer: Any) -> Any:
    """The 2-norm of every gradient the step is about to use, as a 0-d tensor on their device (no sync):
    torch's own foreach norm per tensor (``torch._foreach_norm``, what ``clip_grad_norm_`` uses), then the
    norm of those. ``None`` when no parameter has a gradient. With a closure (LBFGS) the gradients are
    the ones before it runs."""
    import torch

    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        return None
    by_device: dict[Any, list[Any]] = {}
    for grad in grads:
        by_device.setdefault(grad.device, []).append(grad.detach())
    norms = [torch.linalg.vector_norm(torch.stack(torch._foreach_norm(g))) for g in by_device.values()]
    total = (
        norms[0] if len(norms) == 1 else torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
    )
    return total


def _loss_value(value: Any) -> Any:
    """A closure's value as a loss: a one-element tensor (kept on its device) or a number; else None."""
    if isinstance(value, torch.Tensor):
        return value.detach().reshape(()) if value.numel() == 1 else None
    return float(value) if isinstance(value, (int, float)) else None


class AutoWatch:
    """The hooks of one ``lrwatch run``: a context manager around the script. ``resume``: the run directory
    to continue, at ``resume_step`` or at the step the optimizer's loaded state counts."""

    def __init__(
        self,
        *,
        steps_per_epoch: int | None = None,
        epochs: int | None = None,
        resume: Path | None = None,
        resume_step: int | None = None,
        grad_norm: bool = False,
    ) -> None:
        self.grad_norm = grad_norm  # --grad-norm: each step's total gradient norm, computed in the pre-hook
        self._norm: Any = None
        self.steps_per_epoch = steps_per_epoch
        self.epochs = epochs
        self.resume = resume
        self.resume_step = resume_step
        self.monitor: lrwatch.Monitor | None = None
        self.optimizer: Any = None
        self.declined = False  # the script made its own watch: leave it alone
        self.others: set[int] = set()
        self.loader_length: int | None = None
        self._losses: list[Any] = []
        self._closure_values: list[Any] | None = None  # this step's closure values, if step(closure)
        self._taken: TakenOver | None = None
        self._script: ScriptSchedules | None = None  # the script's own schedule, shown until the take-over
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
        if self.monitor is not None:
            try:
                self._save_state(self.monitor.engine)  # whatever ended the script: --resume continues from here
            except OSError as exc:
                with contextlib.suppress(Exception):
                    self.monitor.engine.warn(f"lrwatch's state was not saved: {exc}")
        elif not self.declined and kind is None and current_host().engine is None:  # watch() ran: nothing to say
            print(
                "lrwatch run: the script never called optimizer.step() (nor lrwatch.watch()): nothing to watch",
                file=sys.stderr,
                flush=True,
            )
        return kind is RunStopped  # the run stopped at a step boundary: the script ended as asked

    # -- the hooks --------------------------------------------------------------------------
    def _before_step(self, optimizer: Any, args: Any, kwargs: Any) -> Any:
        if self.declined:
            return None
        if self.monitor is None:
            if current_host().engine is not None:
                self.declined = True  # the script called lrwatch.watch() itself, or a framework callback did
                return None
            self._start(optimizer)
        elif optimizer is self.optimizer:
            if self._script is not None:
                self._script.follow(self.monitor.engine)  # its cadence, its LRs ahead: before this step
            self.monitor.engine.reapply_lr()  # global hooks run first: every hook of the script sees it
        if optimizer is not self.optimizer:
            self._another(optimizer)
            return None
        if self.grad_norm:
            self._norm = total_grad_norm(optimizer)
        return self._wrap_closure(args, kwargs)

    def _start(self, optimizer: Any) -> None:
        """The script's first optimizer step: watch ``optimizer`` (continuing ``resume`` if given)."""
        self.optimizer = optimizer
        steps_per_epoch = self.steps_per_epoch or self.loader_length  # None: unknown, the x axis counts steps
        total = (steps_per_epoch or 1) * self.epochs if self.epochs else total_from_schedulers(optimizer)
        counted = optimizer_step_count(optimizer) if self.resume is not None else None
        host = current_host()
        chained = host.on_engine
        self._script = ScriptSchedules(optimizer, steps_per_epoch=steps_per_epoch)

        def before_first_step(engine: Any) -> None:  # commands that waited for this step are applied next
            self._script.follow(engine, first=True)  # the first segment is the script's schedule, logged so
            if engine.run_dir is not None:
                engine.checkpointer = lambda _reason: self._save_state(engine)  # k, send checkpoint, stops
            if chained is not None:
                chained(engine)

        host.on_engine = before_first_step
        try:
            self.monitor = lrwatch.watch(
                optimizer,
                steps_per_epoch=steps_per_epoch,
                total_steps=total,
                drive_lr=False,
                take_over=True,
                resume=self.resume,
                resume_step=self.resume_step if self.resume_step is not None else counted,
                config={"hooked": True, "steps_per_epoch_from": self._source_of_epoch()},
            )
        finally:
            host.on_engine = chained
        engine = self.monitor.engine
        if not (self.steps_per_epoch or self.loader_length):
            self.monitor.warn("steps per epoch unknown (no DataLoader with a length): the x axis counts steps")
        if self.resume is not None and self.resume_step is None and counted is None:
            self.monitor.warn(
                f"resumed at step {engine.start_step}, where lrwatch's state was saved: the optimizer's state "
                "counts no steps (it keeps none, or the script loaded none); --resume-step N says where"
            )
        self._check_take_over()
        if self.monitor.stopped:  # a stop sent before the first step: the script takes none
            raise RunStopped(engine.stop_reason or "stopped")

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

    def _wrap_closure(self, args: Any, kwargs: Any) -> Any:
        """``step(closure)``: the closure, wrapped to keep its first value (what ``step()`` returns)."""
        closure = args[1] if len(args) > 1 else kwargs.get("closure")  # args[0] is the optimizer
        if closure is None:
            self._closure_values = None
            return None
        values: list[Any] = []
        self._closure_values = values

        def recording_closure() -> Any:
            value = closure()
            if not values:
                values.append(value)
            return value

        if len(args) > 1:
            return (args[0], recording_closure, *args[2:]), kwargs
        return args, {**kwargs, "closure": recording_closure}

    def _step_loss(self) -> Any:
        """This step's loss: the closure's first value, else the sum of what ``backward()`` was called on."""
        losses, self._losses = self._losses, []
        values, self._closure_values = self._closure_values, None
        if values:
            value = _loss_value(values[0])
            if value is not None:
                return value
        if not losses:
            return None
        total = losses[0].reshape(())
        for loss in losses[1:]:
            total = total + loss.reshape(())  # on the device, no sync; promoted as PyTorch adds
        return total

    def _after_step(self, optimizer: Any, _args: Any, _kwargs: Any) -> None:
        if self.monitor is None or optimizer is not self.optimizer:
            return
        loss = self._step_loss()
        norm, self._norm = self._norm, None
        if loss is not None:
            go_on = self.monitor.step(loss, **({"grad_norm": norm} if norm is not None else {}))
        else:
            if not self._missing_warned:
                self._missing_warned = True
                self.monitor.warn("an optimizer step with no backward() before it: its loss is left empty")
            go_on = self.monitor.engine.step(math.nan, watch_loss=False)
        self._check_take_over()
        if not go_on:
            raise RunStopped(self.monitor.engine.stop_reason or "stopped")

    # -- take-over and lrwatch's own state --------------------------------------------------
    def _check_take_over(self) -> None:
        """After a take-over, the script's schedulers are silenced (once) and report lrwatch's LR (each step)."""
        control = self.monitor.engine.control
        if not control.took_over:
            return
        if self._taken is None:
            self._taken = TakenOver(self.optimizer)
            self.monitor.warn(self._taken.message(control.took_over_at))
        else:
            self._taken.report()

    @staticmethod
    def _save_state(engine: Any) -> Path | None:
        """``RUN_DIR/lrwatch_state.json``: the step, the timeline, the switches to come (the model is the
        script's to save). A failed write never ends training: the engine says why."""
        if engine.run_dir is None:
            return None
        try:
            return save_state_file(engine.run_dir, run_state(engine))
        except ValueError as exc:  # (an OSError is the engine's to report: a rejected or a warning event)
            with contextlib.suppress(Exception):
                engine.warn(f"lrwatch's state was not saved ({exc})")
            return None
