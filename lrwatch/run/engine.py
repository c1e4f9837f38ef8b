"""The training engine: owns the optimizer's LR, applies commands at step boundaries, logs.

No Textual import. A training loop calls :meth:`Engine.begin` once, :meth:`Engine.step` after
every ``optimizer.step()`` and :meth:`Engine.end_epoch` after each epoch; any other thread talks
to it only through :meth:`Engine.submit` (commands) and reads :meth:`Engine.events_since`,
:attr:`Engine.history`, :attr:`Engine.timeline` and :meth:`Engine.status` (events and data).

Per step the engine records the finished step, moves to the next, applies every queued command
there (never mid-step), and sets the LR of every param group from the timeline
(:class:`~lrwatch.run.groups.GroupLrs`: :meth:`Timeline.lrs` over aligned blocks of steps, the same call
the preview makes). The engine decides *when*; what a command does is :mod:`lrwatch.run.actions`, what
a diverged loss leads to is :class:`~lrwatch.run.divergence.DivergenceResponse`, and under DDP (``sync``)
the commands are rank 0's, agreed at sync steps (:meth:`~lrwatch.run.distributed.RankSync.agree`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lrwatch.protocol.commands import (
    Command,
    Race,
    Stop,
)
from lrwatch.protocol.events import Event, EventKind, RunState, RunStatus
from lrwatch.record.rundir import run_info
from lrwatch.record.runlog import Listener, RunLog
from lrwatch.run.actions import act
from lrwatch.run.commands import CommandQueue, Done
from lrwatch.run.divergence import DivergencePolicy, DivergenceResponse, DivergenceWatch, Snapshotter
from lrwatch.run.ending import Ending
from lrwatch.run.faststep import FastStep
from lrwatch.run.lrcontrol import LrControl
from lrwatch.run.plateau import PlateauWatch
from lrwatch.run.racehooks import RaceHooks
from lrwatch.run.system import SystemSampler
from lrwatch.schedule.timeline import Timeline

PAUSE_POLL_SECONDS = 0.25


class Engine(FastStep, RaceHooks, Ending):
    """Drives ``optimizer``'s LR along ``timeline`` and records the run.

    Each param group follows its own timeline from its own initial LR (:mod:`lrwatch.run.groups`).
    """

    def __init__(
        self,
        optimizer: Any,
        timeline: Timeline,
        *,
        run_dir: str | Path | None = None,
        val_names: tuple[str, ...] = ("val_loss", "val_acc"),
        config: dict[str, Any] | None = None,
        drive_lr: bool = True,
        take_over: bool = False,
        epochs_known: bool = True,
        start_step: int = 0,
        checkpointer: Callable[[str], Path] | None = None,
        divergence: DivergencePolicy | None = None,
        snapshotter: Snapshotter | None = None,
        tokens_per_step: float | None = None,
    ) -> None:
        self.optimizer = optimizer
        self.system = SystemSampler(tokens_per_step)
        self._timeline = timeline
        self.control = LrControl(optimizer, timeline, drive=drive_lr, take_over=take_over, warn=self.warn)
        self.epochs_known = epochs_known  # False: an epoch is one step; metrics.csv's epoch column stays empty
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log = RunLog(self.run_dir, val_names, resume_at=start_step or None)
        self.history = self.log.history
        if self.log.writer is not None:
            self.log.writer.on_trouble = self._disk_trouble
        self.config = dict(config or {})
        self.checkpointer = checkpointer
        self.lr_finder: Callable[[], Any] | None = None  # Monitor.find_lr when lrwatch can run steps itself
        self.racer: Callable[[Race], Any] | None = None  # Monitor's race runner, likewise
        self.race_progress: Callable[[], dict[str, Any]] | None = None  # set while a race runs
        self._tell: Done = lambda _event: None
        watch = DivergenceWatch(divergence, snapshotter) if divergence is not None else None
        self.divergence = DivergenceResponse(self, watch)  # a diverged loss: pause, stop or roll back
        self.stop_reason: str | None = None
        self.checkpoint_error: str | None = None  # why the last checkpoint could not be written
        self.completed = False  # the run reached the end of its schedule (a cooldown's last step)
        self._ends_at = timeline.ends_at  # kept with the timeline: the step boundary reads it every step
        self.plateau = PlateauWatch(self)  # a plateau schedule's evaluations
        self.commands = CommandQueue(on_change=self._leave_fast)
        self.step_index = start_step
        self.start_step = start_step
        self.steps_taken = 0  # in this process
        self.state: RunState = "created"
        self.started_at = time.time()
        self.error: str | None = None
        self.monitors = 0  # interactive monitors attached (the run's server counts them)
        self.sync: Any = None  # a distributed.RankSync under DDP: commands and stops agreed at sync steps
        self.gpu: Any = None  # a gpu.GpuProbe when the run trains on CUDA (sampled off this thread)
        self._awaiting: deque[tuple[int, float, dict[str, float] | None]] = deque()  # loss on a GPU
        self._init_fast()

    # -- the UI side: any thread ------------------------------------------------------------
    @property
    def timeline(self) -> Timeline:
        return self._timeline

    def submit(self, command: Command, on_done: Done | None = None) -> None:
        """Queue a command; it takes effect at the next step boundary, where ``on_done`` (if given) is
        called in the training thread with the event it led to (``switch``, ``rejected``, ...)."""
        self.commands.submit(command, on_done)

    def events_since(self, index: int) -> list[Event]:
        return self.log.events_since(index)

    def status(self) -> RunStatus:
        k = self._timeline.steps_per_epoch
        return RunStatus(
            state=self.state,
            step=self.step_index,
            epoch=self.step_index / k,
            total_steps=self._timeline.total_steps,
            steps_per_epoch=k,
            lr=self.lr,
            run_dir=str(self.run_dir) if self.run_dir else None,
            error=self.error,
            drives_lr=self.drive_lr,
            takes_over=self.control.awaiting_hand_over,
            epochs_known=self.epochs_known,
            device=str(self.config.get("device", "")),
            ranks=self.sync.world_size if self.sync is not None else 1,
            gpu=self.gpu.latest() if self.gpu is not None else None,
            race=self.race_progress() if self.race_progress is not None else None,
        )

    @property
    def awaits_divergence_answer(self) -> bool:
        """Paused at a divergence alert: a rollback, a resume or a stop is expected."""
        return self.divergence.paused and self.state == "paused"

    def add_listener(self, listener: Listener) -> None:
        """Called in the training thread with every event; keep it cheap."""
        self.log.add_listener(listener)

    def schedule_command(self, step: int, command: Command) -> None:
        """Queue ``command`` when the run reaches ``step`` (``--switch EPOCH:SPEC``), as a key press would."""
        self.commands.schedule(step, command)

    def restore(self, step: int, timeline: Timeline, scheduled: list[tuple[int, Command]]) -> None:
        """Continue a saved run: at ``step``, under ``timeline``, with ``scheduled`` commands still to come.
        Only before the first step (like a PyTorch scheduler's ``load_state_dict``); logs ``resumed``."""
        if self.steps_taken:
            raise RuntimeError("load lrwatch's state before the first monitor.step(), not after")
        self.step_index = self.start_step = int(step)
        self.set_timeline(timeline)
        self.commands.replace_scheduled(scheduled)
        self.emit("resumed", timeline=timeline.to_dict(), drives_lr=self.drive_lr)
        self._set_lr(self.step_index)

    def scheduled_commands(self) -> list[tuple[int, Command]]:
        """The commands still waiting for their step, in step order (a checkpoint keeps them)."""
        return self.commands.scheduled()

    # -- the training side ------------------------------------------------------------------
    def emit(self, kind: str, **data: Any) -> Event:
        """Log an event at the current step (the training thread)."""
        self.fast_until = 0  # whatever led to it may change what the next step does
        epoch = self.step_index / self._timeline.steps_per_epoch
        return self.log.emit(Event(kind, self.step_index, epoch, time.time(), data))

    def begin(self) -> None:
        """Write ``run.json``, log the start (or resume), apply queued commands and the first step's LR."""
        self.state = "running"
        if not self.start_step:
            self.log.write_run_info(run_info(self.config, self._timeline.to_dict(), self.started_at))
        if self.start_step:
            self.emit("resumed", timeline=self._timeline.to_dict(), drives_lr=self.drive_lr)
        else:
            self.emit("start", timeline=self._timeline.to_dict(), drives_lr=self.drive_lr)
        self._at_boundary()

    @property
    def lr(self) -> float:
        """The LR of the next step (driving), or of the last one (watching)."""
        return self.control.lr

    @property
    def drive_lr(self) -> bool:
        return self.control.drive

    def reapply_lr(self) -> None:
        """Set this step's LR again before ``optimizer.step()`` (after a take-over: see
        :mod:`lrwatch.run.lrcontrol`)."""
        self.control.reapply()

    def warn(self, message: str) -> None:
        """Log a ``warning`` event (shown in the monitor and the headless lines)."""
        self.emit("warning", message=message)

    def _disk_trouble(self, text: str | None) -> None:
        """The run directory could not be written (``text``), or can be again (``None``): one event each."""
        if text is not None:
            self.warn(text)
        else:
            self.emit("warning", message="the run directory is written again: what waited is on disk")

    def record(self, kind: EventKind, **data: Any) -> Event:
        """Log an event of the loop's own (``lr_find``) at the current step, in the training thread."""
        return self.emit(kind, **data)

    def _step(self, s: int, loss: float | None, watch_loss: bool, metrics: dict[str, float] | None) -> bool:
        self.fast_until = 0
        if self._unjudged:  # the losses that went the short way join the divergence window first
            self.divergence.remember(self._unjudged)
            self._unjudged = []
        self.control.after_step()
        self.step_index = s + 1  # before recording: a snapshot taken there holds the weights after step s
        self.steps_taken += 1
        if loss is None or self._awaiting:
            self._awaiting.append((s, self.lr, metrics))
            if loss is not None:
                self.deliver([loss])
        else:
            self._record(s, self.lr, float(loss), watch_loss, metrics)
        return self._at_boundary()

    def deliver(self, losses: list[Any]) -> None:
        """The losses of the oldest steps that were taken with ``loss=None``, in step order (the
        training thread): each a float, or ``(loss, {metric: value})`` when metrics came with it. A
        diverged one is acted on at the next step boundary (or sync step)."""
        self.fast_until = 0
        for item in losses:
            step, lr, metrics = self._awaiting.popleft()
            if isinstance(item, tuple):
                item, more = item
                metrics = {**metrics, **more} if metrics else more
            self._record(step, lr, float(item), True, metrics)

    def _record(
        self, step: int, lr: float, loss: float, watch_loss: bool = True, metrics: dict[str, float] | None = None
    ) -> None:
        epoch = step / self._timeline.steps_per_epoch if self.epochs_known else math.nan
        self.log.add_step(step, epoch, lr, loss, metrics)
        if watch_loss:
            self.divergence.observe(step, loss)
        system = self.system
        if metrics and "tokens" in metrics:
            system.tokens += metrics["tokens"]
            system.counted_tokens = True
        now = time.monotonic()
        if now >= system.next_at:  # about once a second: metrics.csv flushed; steps/s, CPU, RSS, the GPU
            self.log.tick(now)
            readings = system.sample(step + 1, now, self.gpu.latest() if self.gpu is not None else None)
            if readings:
                self.log.history.add_metrics(step, readings)

    def add_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Step-level metrics of a step already recorded (or without a row), in the history only."""
        self.log.history.add_metrics(step, metrics)

    def emit_switch(self, **extra: Any) -> Event:
        """A ``switch`` event for the segment just added: its spec, anchor, base LR and PyTorch line."""
        seg = self._timeline.segments[-1]
        return self.emit(
            "switch",
            spec=str(seg.spec),
            anchor=seg.anchor,
            base_lr=seg.base_lr,
            torch=seg.schedule.torch_line(),
            **extra,
        )

    def end_epoch(self, **metrics: float) -> None:
        """Record validation metrics at the end of an epoch (``val_loss=…, val_acc=…``)."""
        k = self._timeline.steps_per_epoch
        epoch = self.step_index / k if self.epochs_known else math.nan  # metrics.csv: steps only, as its rows
        values = {name: float(v) for name, v in metrics.items()}
        self.log.add_epoch(self.step_index, epoch, values)
        self.emit("epoch", **values)
        self.plateau.observe(values)

    def checkpoint(self, reason: str = "request") -> Path | None:
        """Save a checkpoint now (a step boundary) through the checkpointer; log it. ``None``: none set."""
        self.checkpoint_error = None
        if self.checkpointer is None:
            return None
        self.log.flush()
        try:
            path = self.checkpointer(reason)
        except OSError as exc:  # a full disk, a read-only run directory: training goes on, the last one intact
            self.checkpoint_error = str(exc)
            if reason != "request":  # a request's refusal is its rejected event, which says the same
                self.warn(f"the {reason} checkpoint was not saved: {exc} (the previous one is intact)")
            return None
        if path is not None:  # None: it could not be written, and said why
            self.emit("checkpoint", path=str(path), reason=reason)
        return path

    # -- step boundary ----------------------------------------------------------------------
    def _at_boundary(self) -> bool:
        if self.divergence.pending is not None and self.sync is None:
            self.divergence.act(self.divergence.action())
        for command in self.commands.due(self.step_index):
            self._apply(command)  # the same on every rank: each was given the same switches
        if self.sync is None:
            while (pending := self.commands.take()) is not None:  # one at a time: a race takes its own ends
                self._apply(*pending)
        elif self.sync.due(self.step_index):
            self.sync.agree(self)
        while self.state == "paused":
            self.log.flush()
            if (reason := self.divergence.unanswered()) is not None:
                if self.sync is None:
                    self.stop_now(reason, checkpoint=False)
                    break
                if self.sync.leader:
                    self.commands.submit(Stop(reason))
            if self.sync is not None:
                self.sync.agree(self, wait=PAUSE_POLL_SECONDS)
                continue
            pending = self.commands.take(wait=PAUSE_POLL_SECONDS)
            if pending is not None:
                self._apply(*pending)
        ends_at = self._ends_at
        if ends_at is not None and self.step_index >= ends_at and self.state in ("running", "paused"):
            self.completed = True  # the cooldown's last step is done: the run ends here, as planned
            self.state, self.stop_reason = "stopping", "the cooldown ended"
            self.emit("stop", reason=self.stop_reason)
            self.checkpoint("end")
        if self.state == "stopping":
            return False
        self._set_lr(self.step_index)
        self._plan_fast()
        return True

    def _apply(self, command: Command, on_done: Done | None = None) -> None:
        """Apply one command at this boundary; ``on_done`` gets the event it led to (``rejected``: nothing)."""
        first = len(self.log)
        told = on_done is None

        def tell(event: Event) -> None:
            nonlocal told
            if not told:
                told = True
                on_done(event)

        self._tell = tell  # a race tells its start (race_start) long before it ends
        act(self, command)
        if not told:
            tell(self.log.event_at(first) or self.emit("rejected", command=command.to_dict(), reason="nothing to do"))

    def set_timeline(self, timeline: Timeline) -> None:
        self.fast_until = 0
        self._timeline = timeline
        self._ends_at = timeline.ends_at
        self.control.set_timeline(timeline)

    def _set_lr(self, step: int) -> None:
        self.fast_until = 0  # between boundaries (a plateau's reduction): planned again at the next one
        self.control.set(step)

    def reset_lr(self) -> None:
        """Set the next step's LR again from the timeline (a change between steps: a plateau's reduction)."""
        self._set_lr(self.step_index)
