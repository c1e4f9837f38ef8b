"""The public API: lrwatch in your own PyTorch loop with three added lines.

.. code-block:: python

    monitor = lrwatch.watch(optimizer, epochs=50, steps_per_epoch=len(loader), schedule="cosine", model=model)
    for epoch in range(monitor.start_epoch, 50):
        for x, y in loader:
            ...; optimizer.step()
            if not monitor.step(loss):          # logs, applies switches/pause/stop, sets the next LR
                break
        monitor.epoch_end(val_loss=val_loss)    # optional validation metrics
    monitor.close()

Run the script with ``lrwatch run train.py`` for the live monitor, or plainly (``python train.py``,
``lrwatch run --headless train.py``) for none: the same code either way. ``drive_lr=False`` keeps the
loop's own PyTorch scheduler and only watches (monitor-only).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lrwatch.checkpoints import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    STATE_FORMAT,
    WeightsSnapshot,
    load_checkpoint,
    load_state,
    parse_state,
    rng_state,
    set_rng_state,
    state_of,
)
from lrwatch.distributed import RankSync, join_ranks, rank_error
from lrwatch.divergence import DivergencePolicy
from lrwatch.engine import Engine
from lrwatch.gpu import probe_gpu
from lrwatch.host import Host as Host  # re-exported: lrwatch.api was their home
from lrwatch.host import current_host
from lrwatch.host import run_loop as run_loop
from lrwatch.host import serve as serve
from lrwatch.host import using_host as using_host
from lrwatch.losses import DeviceLosses, on_device
from lrwatch.lrfind import RangeTest, range_test
from lrwatch.protocol import Race, Switch
from lrwatch.race import RaceRun
from lrwatch.rundir import default_run_dir, read_metric_rows, write_lr_find
from lrwatch.schedules import SpecError, parse_spec
from lrwatch.timeline import Timeline


def parse_switch(text: str) -> tuple[float, str]:
    """``"EPOCH:SPEC"`` → ``(epoch, spec)``, validated; :class:`SpecError` with one line if not."""
    epoch_text, sep, spec = text.partition(":")
    try:
        epoch = float(epoch_text)
    except ValueError:
        epoch = math.nan
    if not sep or not math.isfinite(epoch) or epoch < 0:
        raise SpecError(f"expected EPOCH:SPEC with EPOCH >= 0, e.g. 10:cosine:T_max=20, got {text!r}")
    return epoch, str(parse_spec(spec))


class Monitor:
    """What :func:`watch` returns: call :meth:`step` after every ``optimizer.step()``."""

    def __init__(
        self,
        engine: Engine,
        *,
        model: Any = None,
        extra_state: dict[str, Any] | None = None,
        checkpoint_every: float | None = None,
    ) -> None:
        self.engine = engine
        self.model = model
        self.extra_state = dict(extra_state or {})
        self.checkpoint_every = checkpoint_every
        self._closed = False
        self._device_losses: DeviceLosses | None = None
        self.train_step: Callable[[Any], Any] | None = None  # watch(train_step=...): steps lrwatch can run
        self.batches: Callable[[int], Iterable[Any]] | None = None
        self.evaluate: Callable[[], Any] | None = None  # watch(evaluate=...): a race's validation

    # -- the loop's side --------------------------------------------------------------------
    @property
    def start_step(self) -> int:
        """The first step to run: 0, or where a resumed run stopped."""
        return self.engine.start_step

    @property
    def start_epoch(self) -> int:
        return self.engine.start_step // self.engine.timeline.steps_per_epoch

    @property
    def step_index(self) -> int:
        """The next step to run. It moves by one per :meth:`step`, and by H when a race keeps a candidate
        (lrwatch trained those steps): go on with ``batches(monitor.step_index)``."""
        return self.engine.step_index

    @property
    def step_in_epoch(self) -> int:
        """Batches of ``start_epoch`` already done before a resume (skip them)."""
        return self.engine.start_step % self.engine.timeline.steps_per_epoch

    @property
    def stopped(self) -> bool:
        return self.engine.state in ("stopping", "stopped", "finished", "error")

    @property
    def lr(self) -> float:
        return self.engine.lr

    def step(self, loss: Any) -> bool:
        """Log this step's loss (a float or a 0-d tensor); ``False`` means stop now (``q``, a signal).
        A loss on a GPU is never waited for here: it is copied to the host with others, later
        (:mod:`lrwatch.losses`)."""
        if self.stopped:
            return False
        if not on_device(loss):
            return self.engine.step(loss.detach().item() if hasattr(loss, "detach") else float(loss))
        if self._device_losses is None:
            self._device_losses = DeviceLosses()
        self.engine.deliver(self._device_losses.ready())
        self._device_losses.push(loss)
        go_on = self.engine.step(None)
        if not go_on:
            self._drain_device_losses()  # every step's loss is logged before the run ends
        return go_on

    def warn(self, message: str) -> None:
        """Log a ``warning`` event: shown in the monitor's events panel and the headless lines."""
        self.engine.warn(message)

    def _drain_device_losses(self) -> None:
        if self._device_losses is not None:
            self.engine.deliver(self._device_losses.drain())

    def epoch_end(self, **metrics: float) -> None:
        """Log validation metrics (names from ``val_names``); checkpoint if ``checkpoint_every`` is due.
        Losses still on a GPU are copied first (one wait per epoch), so the epoch's rows are all logged."""
        self._drain_device_losses()
        self.engine.end_epoch(**metrics)
        every = self.checkpoint_every
        if every and self.model is not None:
            epoch = self.engine.step_index / self.engine.timeline.steps_per_epoch
            if abs(epoch / every - round(epoch / every)) < 1e-9:
                self.engine.checkpoint("every")

    def close(self, error: BaseException | None = None) -> None:
        """End the run: log how it ended, flush and close the run directory. Safe to call twice."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(ValueError):
                _open_monitors.remove(self)
            with contextlib.suppress(Exception):  # a failed device must not keep the run from being closed
                self._drain_device_losses()
            if error is not None and self.engine.sync is not None:
                error = rank_error(self.engine.sync, self.engine.step_index, error)  # names a rank that left
            self.engine.finish(error)

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, _tb: object) -> None:
        self.close(exc if isinstance(exc, Exception) else None)

    def find_lr(self, **options: float) -> RangeTest:
        """The LR range test from the run's current state (call it between steps): the LR grows from
        ``start_lr`` (1e-7) to ``end_lr`` (10) over ``num_iter`` (100) of the run's next batches (see
        :mod:`lrwatch.lrfind`); model, optimizer and RNG states are restored after, so the run goes on
        as if it had not happened. Writes ``RUN_DIR/lr_find.csv``, logs an ``lr_find`` event, returns the test."""
        self._check_self_stepping("find_lr")
        self._drain_device_losses()
        engine = self.engine
        engine.control.suspended = True  # its optimizer hook must neither reset nor report the test's LRs
        try:
            batches = self.batches(engine.step_index)
            test = range_test(self.model, engine.optimizer, self.train_step, batches, **options)
        finally:
            engine.control.suspended = False
        if engine.run_dir is not None:
            write_lr_find(engine.run_dir, test.rows())
        engine.record(
            "lr_find",
            steepest=test.steepest,
            min_over_10=test.min_over_10,
            points=len(test.lrs),
            diverged=test.diverged,
            lrs=test.lrs.tolist(),  # ≤ num_iter points each: what a monitor draws
            smoothed=test.smoothed.tolist(),
        )
        return test

    def race(self, specs: Sequence[str] = (), *, steps: int | None = None, keep: str | int = "none") -> dict[str, Any]:
        """Race candidate schedules from the run's current state (call it between steps; see
        :mod:`lrwatch.race`): continuing, and ``specs`` (none: every kind with fitted defaults), each for
        ``steps`` (default: one epoch or a tenth of the rest) on the same batches, then ``evaluate()``.
        ``keep="best"`` goes on from the winner's end state (``step_index`` moves ahead by H), ``"none"``
        restores the snapshot, an index keeps that candidate (0: continuing, then ``specs`` in order).
        Returns the ``race`` event's data; its ``race_end`` says what was kept."""
        index = keep if isinstance(keep, int) and not isinstance(keep, bool) else None
        if index is None and keep not in ("none", "best"):
            raise ValueError(f'keep must be "none", "best" or a candidate\'s index, not {keep!r}')
        self._check_self_stepping("race")
        first = len(self.engine.log)
        self._race(Race(tuple(specs), steps, "none" if index is not None else str(keep)), ask=False, keep_index=index)
        events = self.engine.events_since(first)
        done = [e for e in events if e.kind == "race"]
        if not done:
            refused = [e for e in events if e.kind == "rejected"]
            raise ValueError(refused[-1].data["reason"] if refused else "the race ended before every candidate ran")
        return done[-1].data

    def _check_self_stepping(self, what: str) -> None:
        missing = [name for name in ("train_step", "batches", "model") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{what} needs lrwatch.watch(..., {', '.join(f'{m}=' for m in missing)})")
        if self.engine.sync is not None:
            raise ValueError(f"{what} is not supported under DDP yet: every rank would have to run it together")

    def _race(self, command: Race, *, ask: bool, keep_index: int | None = None) -> None:
        """The race, in the training thread: from a key or ``lrwatch send`` (``ask``: a monitor attached at
        the end decides) or from :meth:`race`. A refusal is a ``rejected`` event."""
        engine = self.engine
        if engine.sync is not None or not engine.drive_lr:
            engine.apply(command)  # the engine says why not
            return
        self._drain_device_losses()
        try:
            run = RaceRun(
                engine, command, model=self.model, train_step=self.train_step, batches=self.batches,
                evaluate=self.evaluate, ask=ask, keep_index=keep_index,
            )  # fmt: skip
        except SpecError as exc:
            engine.reject(command, None, str(exc))
            return
        run.run()

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint(self) -> Path | None:
        """Save a checkpoint now (call between steps); the monitor's ``k`` key does the same."""
        return self.engine.checkpoint("request")

    def state_dict(self) -> dict[str, Any]:
        """lrwatch's state, to save beside your model in your own checkpoint: the step, the timeline with
        every switch, the switches still planned. Plain types only: it loads with ``weights_only=True``."""
        engine = self.engine
        return {
            "format": STATE_FORMAT,
            "step": engine.step_index,
            "timeline": engine.timeline.to_dict(),
            "scripted": [[step, command.to_dict()] for step, command in engine.scheduled_commands()],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (call it right after :func:`watch`, before the first step,
        as with a PyTorch scheduler). The run's LRs go on exactly where they were; ``start_epoch`` and
        ``step_in_epoch`` say where your loop picks up. The run directory is the one ``watch()`` opened."""
        step, timeline, scheduled = parse_state(state)
        total = self.engine.timeline.total_steps
        self.engine.restore(step, replace(timeline, total_steps=total or timeline.total_steps), scheduled)

    def _save(self, reason: str) -> Path:
        """lrwatch's own checkpoint: :meth:`state_dict` with model, optimizer, RNG and extra states."""
        import torch

        engine = self.engine
        state = {
            "format": CHECKPOINT_FORMAT,
            "lrwatch": self.state_dict(),
            "reason": reason,
            "model": self.model.state_dict() if self.model is not None else None,
            "optimizer": engine.optimizer.state_dict(),
            "rng": rng_state(),
            "extra": {name: state_of(obj) for name, obj in self.extra_state.items()},
        }
        path = engine.run_dir / CHECKPOINT_NAME
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path


def _load_history(engine: Engine, run_dir: Path, before_step: int) -> None:
    """Fill the history with the rows a resumed run already logged, so its plots show the whole run."""
    for row in read_metric_rows(run_dir / "metrics.csv"):
        if len(row) == 4:
            if row[0] < before_step:
                engine.history.append(*row)
        elif row[0] <= before_step:
            engine.history.append_epoch(*row)


def watch(
    optimizer: Any,
    *,
    steps_per_epoch: int | None,
    epochs: int | None = None,
    total_steps: int | None = None,
    schedule: str | None = None,
    lr: float | None = None,
    per_epoch: bool = False,
    model: Any = None,
    run_dir: str | Path | None = None,
    drive_lr: bool = True,
    take_over: bool = False,
    switches: Sequence[str] = (),
    val_names: Sequence[str] = ("val_loss", "val_acc"),
    checkpoint_every: float | None = None,
    resume: str | Path | None = None,
    extra_state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    train_step: Callable[[Any], Any] | None = None,
    batches: Callable[[int], Iterable[Any]] | None = None,
    evaluate: Callable[[], Any] | None = None,
    on_divergence: str | None = None,
    spike_factor: float | None = None,
) -> Monitor:
    """Start watching (and, by default, driving) ``optimizer``'s learning rate.

    Args:
        steps_per_epoch: optimizer steps per epoch (``len(loader)``); schedule times are in epochs. ``None``:
            unknown; an epoch is then one step (the x axis counts steps), ``metrics.csv``'s epoch column is empty.
        epochs: the planned length, for the preview and fitted defaults (``None``: unknown).
        total_steps: the planned length in steps, when it is not ``steps_per_epoch × epochs`` (a framework
            that knows its optimizer steps, e.g. Lightning's ``estimated_stepping_batches``).
        schedule: initial spec, e.g. ``"cosine:T_max=25,eta_min=0.001"`` (default ``cosine``). On a resume,
            a schedule that differs from the one in force is applied as a new, logged switch.
        lr: initial LR (default: the optimizer's group 0 LR).
        per_epoch: change the LR only at epoch boundaries, like ``scheduler.step()`` once per epoch.
        model: enables checkpoints (``k`` key, ``checkpoint_every``, and one on every stop).
        drive_lr: ``False``: monitor-only; the loop's own scheduler sets the LR, switching is off.
        take_over: with ``drive_lr=False``: the first switch hands the LR to lrwatch, which from then on
            sets it before every ``optimizer.step()``, whatever the loop's own scheduler does.
        switches: ``"EPOCH:SPEC"`` switches applied when the run gets there, as key presses would be.
        resume: a run directory with a checkpoint: restore model, optimizer, timeline, step, RNG states.
        extra_state: more things to checkpoint: ``torch.Generator`` or anything with ``state_dict``.
        train_step, batches: for lrwatch to run steps itself (:meth:`Monitor.find_lr`): ``train_step(batch)``
            does forward, backward and ``optimizer.step()`` and returns the loss; ``batches(start_step)``
            yields the batches from that step on, in the order training sees them. With them (and ``model``)
            lrwatch can also race schedules (:meth:`Monitor.race`, the ``f`` key): after a race keeps a
            candidate, ``monitor.step_index`` has moved ahead by its steps; continue from there.
        evaluate: the validation a race ranks candidates by: returns ``val_loss`` (a float, a tuple that
            starts with it, or a dict of metrics). Without it, candidates are ranked by train loss.
        on_divergence: ``pause`` (the monitor's default), ``stop`` (headless default) or ``rollback``, when a
            loss is NaN/Inf or above ``spike_factor`` (default 10) times its recent mean.
    """
    host = current_host()
    sync = RankSync.from_environment()  # DDP: every rank is here; rank 0 leads
    leader = sync is None or sync.leader
    resume = Path(resume) if resume is not None else host.resume
    if lr is None:
        lr = float(optimizer.param_groups[0]["lr"])
    epochs_known = steps_per_epoch is not None
    steps_per_epoch = steps_per_epoch or 1
    total = total_steps if total_steps is not None else (steps_per_epoch * epochs if epochs else None)
    scripted = [parse_switch(text) for text in switches]
    if resume is not None:
        state = load_checkpoint(resume)
        start_step, saved_timeline, saved_switches = parse_state(state["lrwatch"])
        timeline = replace(saved_timeline, total_steps=total)
        directory = resume
    else:
        timeline = Timeline.start(
            schedule or "cosine", lr=lr, steps_per_epoch=steps_per_epoch, total_steps=total, per_epoch=per_epoch
        )
        start_step = 0
        directory = Path(run_dir) if run_dir is not None else (host.run_dir or default_run_dir())
    action = on_divergence or host.on_divergence or ("auto" if host.spawned else "stop" if host.headless else "pause")
    policy = DivergencePolicy(action=action, spike_factor=spike_factor or host.spike_factor)
    engine = Engine(
        optimizer,
        timeline,
        run_dir=directory if leader else None,
        val_names=tuple(val_names),
        config={**(config or {}), **({} if epochs_known else {"epochs_known": False})},
        drive_lr=drive_lr,
        take_over=take_over,
        epochs_known=epochs_known,
        start_step=start_step,
        divergence=policy,
        snapshotter=WeightsSnapshot(model, optimizer) if model is not None else None,
    )
    monitor = Monitor(engine, model=model, extra_state=extra_state, checkpoint_every=checkpoint_every)
    monitor.train_step, monitor.batches, monitor.evaluate = train_step, batches, evaluate
    if train_step is not None and batches is not None and model is not None and sync is None:
        engine.lr_finder = monitor.find_lr  # the F key and lrwatch send find-lr
        engine.racer = lambda command: monitor._race(command, ask=True)  # the f key and lrwatch send race
    if model is not None and leader:
        engine.checkpointer = monitor._save  # saved once, by rank 0; --resume restores every rank
    k = steps_per_epoch
    if resume is not None:
        if model is not None and state["model"] is not None:
            model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        for name, obj in monitor.extra_state.items():
            if name in state["extra"]:
                load_state(obj, state["extra"][name])
        pending = {(step, json_key(cmd.to_dict())) for step, cmd in saved_switches}
        applied = {(seg.start_step, str(seg.spec)) for seg in timeline.segments}
        for step, cmd in saved_switches:
            engine.schedule_command(step, cmd)
        for epoch, spec in scripted:
            if (round(epoch * k), spec) in applied:
                continue  # the same command line given again on a resume: already in the timeline
            step = max(round(epoch * k), start_step)  # one given for the past lands now, visibly
            if (step, json_key(Switch(spec).to_dict())) not in pending:
                engine.schedule_command(step, Switch(spec))
        active = timeline.segment_at(start_step).spec
        if schedule is not None and str(parse_spec(schedule)) != str(active):
            engine.submit(Switch(schedule))
        if leader:
            _load_history(engine, directory, start_step)
    else:
        for epoch, spec in scripted:
            engine.schedule_command(round(epoch * k), Switch(spec))
    gpu_trouble = probe_gpu(engine, optimizer, sync is not None) if leader else None
    server = host.attach(engine, sync)
    if sync is not None:
        join_ranks(sync, engine, server.record.socket if server is not None else None)
    engine.begin()
    if gpu_trouble:
        engine.warn(gpu_trouble)
    _watch_exit(monitor)
    return monitor


_open_monitors: list[Monitor] = []
_excepthook_installed = False


def _watch_exit(monitor: Monitor) -> None:
    """End ``monitor``'s run when the script ends: at exit (a script that never calls ``close()``), and
    with the exception that ends a script (so that the run records it as an error, not as finished)."""
    global _excepthook_installed
    atexit.register(monitor.close)
    if not _excepthook_installed:
        _excepthook_installed = True
        previous = sys.excepthook

        def excepthook(kind: type[BaseException], error: BaseException, tb: Any) -> None:
            for open_monitor in list(_open_monitors):
                if isinstance(error, KeyboardInterrupt):
                    open_monitor.engine.interrupted()
                open_monitor.close(error if isinstance(error, Exception) else None)
            previous(kind, error, tb)

        sys.excepthook = excepthook
    _open_monitors.append(monitor)


def json_key(command: dict[str, Any]) -> str:
    import json

    return json.dumps(command, sort_keys=True)
