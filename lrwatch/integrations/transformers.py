"""``LRWatchCallback`` for the Hugging Face ``Trainer``: the live monitor for ``trainer.train()``.

    from lrwatch.integrations.transformers import LRWatchCallback

    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[LRWatchCallback("cosine")])
    trainer.train()

``lrwatch run train.py`` shows the monitor; ``python train.py`` runs headless and stays attachable.

A step is an optimizer step (``state.global_step``); its loss is the model's ``loss`` output over the
step's micro-batches, read by a forward hook in training mode: their sum when the Trainer passed
``num_items_in_batch`` (each is then a share of the step's mean), else their mean. The row is written
in ``on_step_end``, with that step's own loss, before ``on_log`` would report it. A model whose outputs
carry no loss (a custom ``compute_loss``) gets the Trainer's logged loss instead: each step between two
logs takes that window's mean (``on_log``), so the rows follow ``logging_steps``.

Every scalar of ``on_log`` goes with its step (``grad_norm``, and what a subclass logs): a logging step's row
waits for ``on_log`` (which follows ``on_step_end``), so ``grad_norm`` lands on its own step. Every ``eval_X``
of an evaluation is logged as ``val_X`` (``eval_loss``: ``val_loss``). The run's length is
``state.max_steps``; an epoch is ``⌈len(train_dataloader) ÷ gradient_accumulation_steps⌉`` steps.

With no ``schedule=``, the Trainer keeps its own schedule: its ``lr_scheduler_type`` with ``warmup_steps`` /
``warmup_ratio`` (the ``LambdaLR`` it built) is mapped to the equal lrwatch spec
(:func:`~lrwatch.integrations.schedulers.spec_of_scheduler`), which lrwatch then drives, LR for LR, and shows
ahead; a scheduler with no equivalent keeps stepping, watched, and lrwatch takes the LR over at the first switch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import transformers

import lrwatch
from lrwatch.integrations.schedulers import spec_of_scheduler


def _loss_of(output: Any) -> Any:
    """The ``loss`` of a model's output (a ``ModelOutput``, a dict), or None."""
    if isinstance(output, Mapping):
        return output.get("loss")
    return getattr(output, "loss", None)


# What on_log says that the step row already holds (lr, loss, epoch), or that sums up the whole run at its end.
NOT_STEP_METRICS = frozenset(
    {"loss", "learning_rate", "epoch", "total_flos", "train_loss", "train_runtime", "train_samples_per_second",
     "train_steps_per_second"}
)  # fmt: skip


def _scalar(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    return getattr(value, "ndim", None) == 0


def step_metrics(logs: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of a training log (``grad_norm``, and anything a subclass of the Trainer logs), by name."""
    return {
        k: float(v) for k, v in logs.items() if k not in NOT_STEP_METRICS and not k.startswith("eval_") and _scalar(v)
    }


class LRWatchCallback(transformers.TrainerCallback):
    """Drive (or only watch) the LR of ``trainer.optimizer`` with lrwatch; log each optimizer step.

    Args:
        schedule: the initial spec (``"cosine"``, ``"exp:gamma=0.9"``, ...); ``None`` (default): the Trainer's own
            schedule (``lr_scheduler_type``, ``warmup_steps``), as the equal lrwatch spec.
        drive_lr: ``True``: lrwatch sets the LR and the Trainer's scheduler is no longer stepped (a
            ``warning`` event says so); ``False``: the Trainer's scheduler keeps it, lrwatch shows it.
        val_names: the evaluation metrics logged, by lrwatch's name; ``eval_loss`` becomes ``val_loss``.
        **watch_args: passed to :func:`lrwatch.watch` (``lr``, ``run_dir``, ``switches``, ...).
    """

    def __init__(
        self,
        schedule: str | None = None,
        *,
        drive_lr: bool = True,
        val_names: tuple[str, ...] = ("val_loss", "val_acc"),
        **watch_args: Any,
    ) -> None:
        self.schedule = schedule
        self.drive_lr = drive_lr
        self.val_names = val_names
        self.watch_args = watch_args
        self.monitor: lrwatch.Monitor | None = None
        self._losses: list[Any] = []  # the current step's micro-batch losses, on their device
        self._shares = False  # the losses are shares of the step's mean (num_items_in_batch was passed)
        self._hook: Any = None
        self._from_logs = False  # no loss in the model's outputs: the steps wait for on_log's loss
        self._waiting = 0
        self._last_logged = math.nan
        self._held: Any = None  # a logging step's loss, waiting for on_log's metrics (grad_norm)
        self._stop = False

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        # accelerate's AcceleratedOptimizer wraps the torch optimizer (same param groups); its hooks are the inner one's
        optimizer = getattr(kwargs["optimizer"], "optimizer", kwargs["optimizer"])
        loader = kwargs.get("train_dataloader")
        accumulate = max(int(args.gradient_accumulation_steps), 1)
        batches = len(loader) if loader is not None and hasattr(loader, "__len__") else None
        steps_per_epoch = max(math.ceil(batches / accumulate), 1) if batches else max(int(state.max_steps), 1)
        scheduler = kwargs.get("lr_scheduler")
        own = spec_of_scheduler(scheduler) if scheduler is not None and self.schedule is None else None
        drive = self.drive_lr and (self.schedule is not None or own is not None or scheduler is None)
        watch_args = dict(self.watch_args)
        if self.schedule is not None and scheduler is not None and "lr" not in watch_args:
            watch_args["lr"] = float(scheduler.base_lrs[0])  # the peak, not a warmup's first LR (0)
        self.monitor = lrwatch.watch(
            optimizer,
            steps_per_epoch=steps_per_epoch,
            total_steps=int(state.max_steps) if state.max_steps and state.max_steps > 0 else None,
            schedule=self.schedule or own,
            drive_lr=drive,
            take_over=self.drive_lr and not drive,  # an unknown scheduler: watched until the first switch
            val_names=self.val_names,
            config={"framework": "transformers", "gradient_accumulation_steps": accumulate},
            **watch_args,
        )
        if scheduler is not None:
            name = type(scheduler).__name__
            # The Trainer logs get_last_lr(): the LR in force, whoever set it.
            scheduler.get_last_lr = lambda: [group["lr"] for group in optimizer.param_groups]
            if drive:
                # The Trainer calls lr_scheduler.step() after every optimizer step: on this one object it no
                # longer moves the LR; lrwatch sets it (along the Trainer's own schedule, when none was given).
                scheduler.step = lambda *_args, **_kwargs: None
                self.monitor.warn(
                    f"lrwatch drives the LR along the Trainer's own schedule, {own}: its {name} is no longer stepped"
                    if own is not None
                    else f"lrwatch drives the LR: the Trainer's {name} is no longer stepped"
                    " (LRWatchCallback(drive_lr=False) keeps it)"
                )
            elif self.drive_lr:
                self.monitor.warn(f"the Trainer's {name} has no lrwatch equivalent: it keeps the LR until a switch")
        self._hook = model.register_forward_hook(self._record_loss, with_kwargs=True)

    def _record_loss(self, module: Any, _args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if not module.training:
            return  # evaluation and prediction
        loss = _loss_of(output)
        if loss is not None and hasattr(loss, "detach"):
            self._losses.append(loss.detach())
            self._shares = kwargs.get("num_items_in_batch") is not None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.monitor is None:
            return control
        self._release()
        losses, self._losses = self._losses, []
        if losses:
            total = losses[0]
            for loss in losses[1:]:
                total = total + loss
            total = total if self._shares else total / len(losses)
            if control.should_log:  # on_log follows with this step's grad_norm: the row waits for it
                self._held = total
                return control
            go_on = self.monitor.step(total)
        else:
            if not self._from_logs:
                self._from_logs = True
                self.monitor.warn("no loss in the model's outputs: each step logs the Trainer's logged loss")
            self._waiting += 1
            go_on = self.monitor.engine.step(None)  # its loss is delivered by on_log
        if not go_on:
            self._deliver(self._last_logged)
            control.should_training_stop = True
        return control

    def _release(self, metrics: dict[str, float] | None = None, control: Any = None) -> None:
        """Log the step held for on_log's metrics (without them if on_log never came)."""
        if self._held is None or self.monitor is None:
            return
        held, self._held = self._held, None
        if not self.monitor.step(held, **(metrics or {})):
            self._deliver(self._last_logged)
            if control is not None:
                control.should_training_stop = True
            else:
                self._stop = True

    def _deliver(self, loss: float, metrics: dict[str, float] | None = None) -> None:
        if self._waiting and self.monitor is not None:
            last: Any = (loss, metrics) if metrics else loss
            self.monitor.engine.deliver([loss] * (self._waiting - 1) + [last])
            self._waiting = 0

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> Any:
        logs = logs or {}
        metrics = step_metrics(logs)
        if "loss" in logs:
            self._last_logged = float(logs["loss"])
            self._deliver(self._last_logged, metrics)
        self._release(metrics, control)
        if self._stop:
            control.should_training_stop = True
        return control

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
        if self.monitor is None or not metrics:
            return
        self._release()
        values = {}
        for key, value in metrics.items():  # every evaluation metric, eval_X as val_X (eval_loss: val_loss)
            if key.startswith("eval_") and _scalar(value):
                values["val_" + key.removeprefix("eval_")] = float(value)
        if values:
            self.monitor.epoch_end(**values)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self._release()
            self._deliver(self._last_logged)
            self.monitor.close()
        if self._hook is not None:
            self._hook.remove()
