"""The loop's handle on its run: :class:`Monitor`, what :func:`lrwatch.watch` returns.

``monitor.step(loss)`` after every ``optimizer.step()`` logs the step and applies what waits for the
step boundary; ``epoch_end`` logs validation metrics; ``close`` ends the run (also at exit, and with the
exception that ends a script). Checkpoints (``state_dict``, ``_save``), the LR range test and the race
run here, in the training thread, between two steps.
"""

from __future__ import annotations

import atexit
import contextlib
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from lrwatch.protocol.commands import Race
from lrwatch.record.rundir import write_lr_find
from lrwatch.record.safefile import WriteError, replace_file
from lrwatch.run.checkpoints import CHECKPOINT_FORMAT, STATE_FORMAT, checkpoint_name, parse_state, rng_state, state_of
from lrwatch.run.distributed import rank_error
from lrwatch.run.engine import Engine
from lrwatch.run.losses import DeviceLosses, host_value, on_device
from lrwatch.run.lrfind import RangeTest, range_test
from lrwatch.run.race import RaceRun
from lrwatch.schedule.spec import SpecError


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
    def total_steps(self) -> int | None:
        """The run's planned length in steps (``None``: unknown). It follows ``lrwatch send RUN_DIR length N``,
        the monitor's prompt, and a cooldown (the run ends with it)."""
        return self.engine.timeline.total_steps

    @property
    def stopped(self) -> bool:
        return self.engine.state in ("stopping", "stopped", "finished", "error")

    @property
    def lr(self) -> float:
        return self.engine.lr

    def step(self, loss: Any, **metrics: Any) -> bool:
        """Log this step's loss (a float or a 0-d tensor) and any metrics (``grad_norm=..., acc=...``: floats or
        0-d tensors, any names; each becomes a column of ``metrics.csv`` and a chart); ``False`` means stop now
        (``q``, a signal). A loss or metric on a GPU is never waited for here: the step's tensors are copied
        to the host together with other steps', later (:mod:`lrwatch.run.losses`)."""
        engine = self.engine
        if engine.step_index < engine.fast_until:  # running, between planned boundaries
            if loss.__class__ is float:
                value = loss
            elif getattr(loss, "is_cuda", True) is False:  # a tensor not on a GPU: read now, at no wait
                value = loss.item()
            else:
                value = None
            if value is not None and not metrics:
                return engine.step(value)
            if value is not None:
                values = {}
                for name, metric in metrics.items():
                    if metric.__class__ is float:
                        values[name] = metric
                    elif getattr(metric, "is_cuda", True) is False:
                        values[name] = metric.item()
                    else:  # on a GPU (copied later), or not a tensor: the way below
                        break
                else:
                    return engine.step(value, metrics=values)
        if self.stopped:
            return False
        if not metrics:  # the common case, first: a float or a CPU tensor is read now
            device = getattr(loss, "device", None)
            if device is None:
                return self.engine.step(float(loss))
            if device.type != "cuda":  # read at once: only a CUDA tensor's read would wait (losses.on_device)
                return self.engine.step(loss.item())
        elif not on_device(loss):
            values = {}
            for name, value in metrics.items():  # one pass: read each now, unless one is on a GPU
                device = getattr(value, "device", None)
                if device is None:
                    values[name] = float(value)
                elif device.type != "cuda":
                    values[name] = value.item()
                else:
                    break
            else:
                return self.engine.step(host_value(loss), metrics=values)
        if self._device_losses is None:
            self._device_losses = DeviceLosses()
        self.engine.deliver(self._device_losses.ready())
        self._device_losses.push(loss if hasattr(loss, "detach") else _as_tensor(loss, metrics), metrics)
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

    def epoch_end(self, **metrics: Any) -> None:
        """Log the epoch's metrics, any names (``val_loss=..., val_f1=...``: floats or 0-d tensors; each a column
        of ``metrics.csv``, plotted per epoch); checkpoint if ``checkpoint_every`` is due. Losses still on a GPU
        are copied first (one wait per epoch), so the epoch's rows are all logged."""
        self._drain_device_losses()
        self.engine.end_epoch(**{name: host_value(v) for name, v in metrics.items()})
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
        :mod:`lrwatch.run.lrfind`); model, optimizer and RNG states are restored after, so the run goes on
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
            try:
                write_lr_find(engine.run_dir, test.rows())
            except WriteError as exc:
                engine.warn(f"lr_find.csv not written ({exc}); the test's curve is in its event")
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
        :mod:`lrwatch.run.race`): continuing, and ``specs`` (none: every kind with fitted defaults), each for
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
        every switch, the switches still planned, a plateau's bookkeeping. Plain types only: it loads with
        ``weights_only=True``."""
        return run_state(self.engine)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (call it right after :func:`watch`, before the first step,
        as with a PyTorch scheduler). The run's LRs go on exactly where they were; ``start_epoch`` and
        ``step_in_epoch`` say where your loop picks up. The run directory is the one ``watch()`` opened."""
        step, timeline, scheduled = parse_state(state)
        total = self.engine.timeline.total_steps
        if state.get("drives_from") is not None and self.engine.control.take_over:
            self.engine.control.hand_over_at = int(state["drives_from"])
        self.engine.restore(step, replace(timeline, total_steps=total or timeline.total_steps), scheduled)
        self.engine.plateau.load_state_dict(state.get("plateau"))

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
        path = engine.run_dir / checkpoint_name(reason, engine.step_index)
        return replace_file(path, lambda f: torch.save(state, f))  # WriteError: the engine says why


def _as_tensor(loss: Any, metrics: dict[str, Any]) -> Any:
    """A float loss beside metrics on a GPU: a tensor on their device, so it travels in the same copy."""
    import torch

    device = next(v.device for v in metrics.values() if on_device(v))
    return torch.tensor(float(loss), device=device)


def run_state(engine: Engine) -> dict[str, Any]:
    """:meth:`Monitor.state_dict` of ``engine``'s run: the step, the timeline, the switches still planned, a
    plateau's bookkeeping, and the step from which lrwatch drives the LR, if it took it over (``lrwatch run``)."""
    state = {
        "format": STATE_FORMAT,
        "step": engine.step_index,
        "timeline": engine.timeline.to_dict(),
        "scripted": [[step, command.to_dict()] for step, command in engine.scheduled_commands()],
    }
    plateau = engine.plateau.state_dict()
    if plateau is not None:
        state["plateau"] = plateau
    taken = engine.control.took_over_at
    return state | ({"drives_from": taken} if taken is not None else {})


_open_monitors: list[Monitor] = []
_excepthook_installed = False


def watch_exit(monitor: Monitor) -> None:
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
