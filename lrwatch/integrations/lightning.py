"""``LRWatchCallback`` for PyTorch Lightning 2.x: the live monitor for a ``Trainer``.

    from lrwatch.integrations.lightning import LRWatchCallback

    trainer = lightning.Trainer(max_epochs=20, callbacks=[LRWatchCallback(schedule="cosine")])
    trainer.fit(model, train_loader, val_loader)

``lrwatch run train.py`` shows the monitor (keys switch the schedule); ``python train.py`` runs
headless and stays attachable (``lrwatch attach``), as with :func:`lrwatch.watch`, which this calls.

A step is an *optimizer* step (``trainer.global_step``): with ``accumulate_grad_batches=k`` its loss
is the mean of its k batches' losses (Lightning hands each batch's loss ÷ k to
``on_train_batch_end``; their sum is that mean). The run's length is
``trainer.estimated_stepping_batches``; an epoch is ``⌈num_training_batches ÷ k⌉`` steps.
Under DDP every rank calls ``watch()``; rank 0 alone writes, serves and shows (:mod:`lrwatch.run.distributed`).

With no ``schedule=``, the module keeps its own scheduler's schedule: the one from ``configure_optimizers``
(``SequentialLR`` warmup + decay, ``OneCycleLR``, ``LinearLR``, ``MultiStepLR``, ... stepped per step or per
epoch) is mapped to the equal lrwatch spec (:func:`~lrwatch.integrations.schedulers.spec_of_scheduler`) and
driven by lrwatch, LR for LR, shown ahead; one with no equivalent keeps stepping, watched, until the first switch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl

import lrwatch
from lrwatch.integrations.schedulers import spec_of_scheduler
from lrwatch.schedule.spec import SpecError, parse_spec


class LRWatchCallback(pl.Callback):
    """Drive (or only watch) the LR of the trainer's optimizer with lrwatch; log each optimizer step.

    Args:
        schedule: the initial spec (``"cosine"``, ``"step:step_size=10,gamma=0.5"``, ...); ``None`` (default): the
            module's own scheduler, as the equal lrwatch spec (none: the constant LR; no equivalent: it keeps
            stepping until the first switch).
        drive_lr: ``True``: lrwatch sets the LR, and an LR scheduler from ``configure_optimizers`` is no
            longer stepped (a ``warning`` event says so). ``False``: the scheduler keeps the LR; lrwatch
            shows it, and switching is off.
        val_names: the ``trainer.callback_metrics`` logged at each validation (``val_loss``, ``val_acc``).
        **watch_args: passed to :func:`lrwatch.watch` (``lr``, ``per_epoch``, ``run_dir``, ``switches``,
            ``on_divergence``, ``spike_factor``, ...).
    """

    def __init__(
        self,
        schedule: str | None = None,
        *,
        drive_lr: bool = True,
        val_names: Sequence[str] = ("val_loss", "val_acc"),
        **watch_args: Any,
    ) -> None:
        self.schedule = schedule
        self.drive_lr = drive_lr
        self.val_names = tuple(val_names)
        self.watch_args = watch_args
        self.monitor: lrwatch.Monitor | None = None
        self._step_loss: Any = None  # the current optimizer step's loss so far (a tensor, on its device)
        self._seen_step = 0
        self._restored: dict[str, Any] | None = None
        self._step_names: set[str] = set()  # metrics logged per step (on_step=True)
        self._epoch_metrics: dict[str, float] = {}  # the epoch's row, written at its end

    # -- the run ----------------------------------------------------------------------------
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        optimizer = trainer.optimizers[0]
        accumulate = max(int(trainer.accumulate_grad_batches), 1)
        batches = trainer.num_training_batches
        steps_per_epoch = max(math.ceil(batches / accumulate), 1) if math.isfinite(batches) else 1
        total = trainer.estimated_stepping_batches
        configs = trainer.lr_scheduler_configs
        own, per_epoch = (None, False) if self.schedule is not None or not configs else _own_schedule(configs)
        drive = self.drive_lr and (self.schedule is not None or own is not None or not configs)
        taken_over = []
        if drive and configs:
            taken_over = [type(config.scheduler).__name__ for config in configs]
            trainer.strategy.lr_scheduler_configs = []  # Lightning steps only the schedulers listed here
        watch_args = dict(self.watch_args)
        if self.schedule is not None and configs and "lr" not in watch_args:
            watch_args["lr"] = float(optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"]))
        if own is not None and per_epoch:
            watch_args.setdefault("per_epoch", True)  # stepped once per epoch, as Lightning's interval="epoch"
        if own is not None and own.startswith("plateau"):
            metric = parse_spec(own).given()["metric"]
            self.val_names += () if metric in self.val_names else (metric,)  # plateau follows it
        self.monitor = lrwatch.watch(
            optimizer,
            steps_per_epoch=steps_per_epoch,
            total_steps=int(total) if math.isfinite(total) else None,
            schedule=self.schedule or own,
            drive_lr=drive,
            take_over=self.drive_lr and not drive,  # a scheduler with no equivalent: watched until the first switch
            model=pl_module,
            val_names=self.val_names,
            config={"framework": "lightning", "accumulate_grad_batches": accumulate},
            **watch_args,
        )
        if self._restored is not None:
            self.monitor.load_state_dict(self._restored)
        if len(trainer.optimizers) > 1:
            self.monitor.warn(f"{len(trainer.optimizers)} optimizers: lrwatch drives and logs the first only")
        if taken_over:
            names = ", ".join(taken_over)
            self.monitor.warn(
                f"lrwatch drives the LR along the module's own schedule, {own}: its {names} is no longer stepped"
                if own is not None
                else f"lrwatch drives the LR: the scheduler from configure_optimizers ({names}) is no longer stepped"
                " (LRWatchCallback(drive_lr=False) keeps it)"
            )
        elif self.drive_lr and not drive:
            names = ", ".join(type(config.scheduler).__name__ for config in configs)
            self.monitor.warn(f"the module's {names} has no lrwatch equivalent: it keeps the LR until a switch")
        self._seen_step = trainer.global_step
        self._step_loss = None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.monitor is None:
            return
        self._flush_epoch()  # a validation inside the epoch (val_check_interval): its row at its own step
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if loss is not None and hasattr(loss, "detach"):
            loss = loss.detach()
            self._step_loss = loss if self._step_loss is None else self._step_loss + loss
        if trainer.global_step == self._seen_step:
            return  # still accumulating: the optimizer has not stepped
        self._seen_step = trainer.global_step
        loss, self._step_loss = self._step_loss, None
        metrics = _step_metrics(trainer)
        self._step_names.update(metrics)
        if not self.monitor.step(loss if loss is not None else float("nan"), **metrics):
            trainer.should_stop = True  # q, a signal, a divergence stop: Lightning ends the fit after this batch

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is None or trainer.sanity_checking:
            return
        self._epoch_metrics = {**self._epoch_metrics, **self._epoch_level(trainer)}  # logged at the epoch's end

    def _epoch_level(self, trainer: pl.Trainer) -> dict[str, float]:
        """Every epoch-level metric logged (``self.log(..., on_epoch=True)``): validation's, the epoch's means."""
        return {
            name: float(value)
            for name, value in trainer.callback_metrics.items()
            if (name in self.val_names or name not in self._step_names) and not name.endswith("_step")
            and getattr(value, "numel", lambda: 1)() == 1
        }  # fmt: skip

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One row per epoch: its validation (run just before) with the epoch's own means (computed now)."""
        if self.monitor is None:
            return
        fresh = self._epoch_level(trainer)  # the epoch's means (on_step and on_epoch: NAME_epoch) are computed now
        self._epoch_metrics.update({k: v for k, v in fresh.items() if k.endswith("_epoch")})
        self._flush_epoch()

    def _flush_epoch(self) -> None:
        metrics, self._epoch_metrics = self._epoch_metrics, {}
        if metrics and self.monitor is not None:
            self.monitor.epoch_end(**metrics)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.monitor is not None:
            self._flush_epoch()
            self.monitor.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.monitor is not None:
            self.monitor.close(exception if isinstance(exception, Exception) else None)

    # -- Lightning's checkpoints carry lrwatch's state ----------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict() if self.monitor is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = dict(state_dict) or None  # applied once watch() has started, before the first step


def _step_metrics(trainer: pl.Trainer) -> dict[str, Any]:
    """What the module logged for this step (``self.log(..., on_step=True)``), by the name its loggers get
    (``acc``, or ``acc_step`` beside an ``acc_epoch``): 0-d tensors, left on their device."""
    results = getattr(trainer, "_results", None)
    if results is None:
        return {}
    try:
        logged = results.metrics(True)["log"]
    except Exception:
        return {}
    return {name: value for name, value in logged.items() if getattr(value, "numel", lambda: 0)() == 1}


def _own_schedule(configs: Sequence[Any]) -> tuple[str | None, bool]:
    """The lrwatch spec of the one scheduler from ``configure_optimizers`` (stepped every step, or every epoch),
    and whether it is stepped per epoch; ``(None, False)`` when there is none lrwatch can equal."""
    if len(configs) != 1 or configs[0].frequency != 1 or configs[0].interval not in ("step", "epoch"):
        return None, False
    config = configs[0]
    spec = spec_of_scheduler(config.scheduler, interval=config.interval)
    if spec is not None and spec.startswith("plateau") and config.monitor:
        try:
            spec = str(parse_spec(spec).with_params(metric=config.monitor))  # the metric Lightning steps it with
        except SpecError:
            return None, False
    return spec, config.interval == "epoch"
