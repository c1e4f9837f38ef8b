"""The training engine: owns the optimizer's LR, applies commands at step boundaries, logs.

No Textual import. A training loop calls :meth:`Engine.begin` once, :meth:`Engine.step` after
every ``optimizer.step()`` and :meth:`Engine.end_epoch` after each epoch; any other thread talks
to it only through :meth:`Engine.submit` (commands) and reads :meth:`Engine.events_since`,
:attr:`Engine.history`, :attr:`Engine.timeline` and :meth:`Engine.status` (events and data).

Per step the engine records the finished step, moves to the next, applies every queued command
there (never mid-step), and sets the LR of every param group from the timeline
(:class:`~lrwatch.groups.GroupLrs`: :meth:`Timeline.lrs` over aligned blocks of steps, the same call
the preview makes). Under DDP (``sync``) the commands are rank 0's, agreed at sync steps.
"""

from __future__ import annotations

import math
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lrwatch.commands import CommandQueue, Done
from lrwatch.divergence import DivergencePolicy, DivergenceWatch, Snapshotter
from lrwatch.lrcontrol import LrControl
from lrwatch.protocol import (
    ENDED_STATES,
    MONITOR_ONLY,
    TAKE_OVER,
    Checkpoint,
    Command,
    EditParams,
    Event,
    EventKind,
    FindLr,
    Pause,
    Race,
    RaceEnd,
    Resume,
    Rollback,
    RunState,
    RunStatus,
    Stop,
    Switch,
)
from lrwatch.rundir import run_info
from lrwatch.runlog import Listener, RunLog
from lrwatch.schedules import SpecError, parse_spec
from lrwatch.timeline import Timeline

PAUSE_POLL_SECONDS = 0.25


class Engine:
    """Drives ``optimizer``'s LR along ``timeline`` and records the run.

    Each param group follows its own timeline from its own initial LR (:mod:`lrwatch.groups`).
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
    ) -> None:
        self.optimizer = optimizer
        self._timeline = timeline
        self.control = LrControl(optimizer, timeline, drive=drive_lr, take_over=take_over, warn=self.warn)
        self.epochs_known = epochs_known  # False: an epoch is one step; metrics.csv's epoch column stays empty
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.log = RunLog(self.run_dir, val_names, resume_at=start_step or None)
        self.history = self.log.history
        self.config = dict(config or {})
        self.checkpointer = checkpointer
        self.lr_finder: Callable[[], Any] | None = None  # Monitor.find_lr when lrwatch can run steps itself
        self.racer: Callable[[Race], Any] | None = None  # Monitor's race runner, likewise
        self.race_progress: Callable[[], dict[str, Any]] | None = None  # set while a race runs
        self._tell: Done = lambda _event: None
        self.divergence = DivergenceWatch(divergence, snapshotter) if divergence is not None else None
        self.stop_reason: str | None = None
        self.commands = CommandQueue()
        self.step_index = start_step
        self.start_step = start_step
        self.steps_taken = 0  # in this process
        self.state: RunState = "created"
        self.started_at = time.time()
        self.error: str | None = None
        self.monitors = 0  # interactive monitors attached (the run's server counts them)
        self._paused_for_divergence = False
        self.sync: Any = None  # a distributed.RankSync under DDP: commands and stops agreed at sync steps
        self.gpu: Any = None  # a gpu.GpuProbe when the run trains on CUDA (sampled off this thread)
        self._diverged: tuple[int, float, str] | None = None  # (step, loss, cause) not yet acted on
        self._awaiting: deque[tuple[int, float]] = deque()  # (step, lr) of steps whose loss is still on a GPU

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
        return self._paused_for_divergence and self.state == "paused"

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
        self._set_timeline(timeline)
        self.commands.replace_scheduled(scheduled)
        self._emit("resumed", timeline=timeline.to_dict(), drives_lr=self.drive_lr)
        self._set_lr(self.step_index)

    def scheduled_commands(self) -> list[tuple[int, Command]]:
        """The commands still waiting for their step, in step order (a checkpoint keeps them)."""
        return self.commands.scheduled()

    # -- the training side ------------------------------------------------------------------
    def _emit(self, kind: str, **data: Any) -> Event:
        epoch = self.step_index / self._timeline.steps_per_epoch
        return self.log.emit(Event(kind, self.step_index, epoch, time.time(), data))

    def begin(self) -> None:
        """Write ``run.json``, log the start (or resume), apply queued commands and the first step's LR."""
        self.state = "running"
        if not self.start_step:
            self.log.write_run_info(run_info(self.config, self._timeline.to_dict(), self.started_at))
        if self.start_step:
            self._emit("resumed", timeline=self._timeline.to_dict(), drives_lr=self.drive_lr)
        else:
            self._emit("start", timeline=self._timeline.to_dict(), drives_lr=self.drive_lr)
        self._at_boundary()

    @property
    def lr(self) -> float:
        """The LR of the next step (driving), or of the last one (watching)."""
        return self.control.lr

    @property
    def drive_lr(self) -> bool:
        return self.control.drive

    def reapply_lr(self) -> None:
        """Set this step's LR again before ``optimizer.step()`` (after a take-over: see :mod:`lrwatch.lrcontrol`)."""
        self.control.reapply()

    def warn(self, message: str) -> None:
        """Log a ``warning`` event (shown in the monitor and the headless lines)."""
        self._emit("warning", message=message)

    def record(self, kind: EventKind, **data: Any) -> Event:
        """Log an event of the loop's own (``lr_find``) at the current step, in the training thread."""
        return self._emit(kind, **data)

    def step(self, loss: float | None, *, watch_loss: bool = True) -> bool:
        """Record the step just taken with its ``loss``; prepare the next. ``False``: stop now.
        ``loss=None``: the loss is still on its device and comes later, through :meth:`deliver`.
        ``watch_loss=False``: there is no loss for this step (``loss`` is NaN, not a divergence)."""
        s = self.step_index
        self.control.after_step()
        self.step_index = s + 1  # before recording: a snapshot taken there holds the weights after step s
        self.steps_taken += 1
        if loss is None or self._awaiting:
            self._awaiting.append((s, self.lr))
            if loss is not None:
                self.deliver([loss])
        else:
            self._record(s, self.lr, float(loss), watch_loss)
        return self._at_boundary()

    def deliver(self, losses: list[float]) -> None:
        """The losses of the oldest steps that were taken with ``loss=None``, in step order (the
        training thread). A diverged one is acted on at the next step boundary (or sync step)."""
        for loss in losses:
            step, lr = self._awaiting.popleft()
            self._record(step, lr, float(loss))

    def _record(self, step: int, lr: float, loss: float, watch_loss: bool = True) -> None:
        epoch = step / self._timeline.steps_per_epoch if self.epochs_known else math.nan
        self.log.add_step(step, epoch, lr, loss)
        if watch_loss and self.divergence is not None and self._diverged is None:
            cause = self.divergence.observe(loss, step + 1)
            if cause is not None:
                self._diverged = (step, loss, cause)

    def _divergence_action(self) -> str:
        return self.divergence.policy.action_now(watched=self.monitors > 0) if self.divergence is not None else ""

    def _act_on_divergence(self, action: str, rank: int | None = None, at_step: int | None = None) -> None:
        """A diverged loss is acted on at the step it happens (under DDP: at the sync step where the
        ranks learn of it, the same on all of them; the event names the rank and its step)."""
        if rank is not None and rank != self.sync.rank:  # another rank's loss: only its step is known here
            step, loss, cause = at_step, None, "another rank"
        else:
            step, loss, cause = self._diverged
        self._diverged = None
        where = {} if rank is None else {"rank": rank}
        self._emit("divergence", loss=loss, lr=self.lr, cause=cause, action=action, at_step=step, **where)
        if action == "pause" and self.state == "running":
            self.state = "paused"
            self._paused_for_divergence = True
            self._emit("pause", reason="divergence")
        elif action == "rollback":
            self._rollback()
        else:
            self._stop(f"divergence at step {step}: loss {loss:.4g} with lr {self.lr:.4g}", checkpoint=False)

    @property
    def rollbacks(self) -> int:
        return self.divergence.rollbacks if self.divergence is not None else 0

    def _rollback(self) -> None:
        """Restore the last good snapshot and halve the LR; stop when out of rollbacks or snapshots."""
        why = self.divergence.why_not_roll_back()
        if why is not None:
            self._stop(f"divergence at step {self.step_index - 1}: gave up ({why})", checkpoint=False)
            return
        snapshot_step = self.divergence.roll_back()
        self._emit("rollback", to_step=snapshot_step, count=self.rollbacks)
        self._set_timeline(self._timeline.scale(self.step_index, 0.5))
        self._emit_switch(scale=0.5, reason="rollback")

    def _emit_switch(self, **extra: Any) -> None:
        """A ``switch`` event for the segment just added: its spec, anchor, base LR and PyTorch line."""
        seg = self._timeline.segments[-1]
        self._emit(
            "switch",
            spec=str(seg.spec),
            anchor=seg.anchor,
            base_lr=seg.base_lr,
            torch=seg.schedule.torch_line(),
            **extra,
        )

    def interrupted(self) -> None:
        """The loop was interrupted mid-step (Ctrl+C): log the stop, without a checkpoint of a half step."""
        self._stop("KeyboardInterrupt", checkpoint=False)

    def _stop(self, reason: str, *, checkpoint: bool = True) -> None:
        if self.state in ("running", "paused"):
            self.state = "stopping"
            self.stop_reason = reason
            self._emit("stop", reason=reason)
            if checkpoint:
                self.checkpoint("stop")  # so that --resume continues exactly here

    def end_epoch(self, **metrics: float) -> None:
        """Record validation metrics at the end of an epoch (``val_loss=…, val_acc=…``)."""
        k = self._timeline.steps_per_epoch
        epoch = self.step_index / k
        values = {name: float(v) for name, v in metrics.items()}
        self.log.add_epoch(self.step_index, epoch, values)
        self._emit("epoch", **values)

    def finish(self, error: BaseException | None = None) -> None:
        """Log how the run ended and close the run directory; safe to call twice."""
        if self.state in ENDED_STATES:
            return
        if error is not None:
            self.error = "".join(traceback.format_exception_only(type(error), error)).strip()
            self._emit("error", message=self.error, traceback="".join(traceback.format_exception(error)))
            self.state = "error"
        elif self.state == "stopping":
            self.state = "stopped"
        else:
            self.state = "finished"
        self._emit("finish", status=self.state)
        self.log.close()
        self.control.remove()

    def checkpoint(self, reason: str = "request") -> Path | None:
        """Save a checkpoint now (a step boundary) through the checkpointer; log it. ``None``: none set."""
        if self.checkpointer is None:
            return None
        self.log.flush()
        path = self.checkpointer(reason)
        self._emit("checkpoint", path=str(path), reason=reason)
        return path

    # -- step boundary ----------------------------------------------------------------------
    def _at_boundary(self) -> bool:
        if self._diverged is not None and self.sync is None:
            self._act_on_divergence(self._divergence_action())
        for command in self.commands.due(self.step_index):
            self._apply(command)  # the same on every rank: each was given the same switches
        if self.sync is None:
            while (pending := self.commands.take()) is not None:  # one at a time: a race takes its own ends
                self._apply(*pending)
        elif self.sync.due(self.step_index):
            self._agree()
        while self.state == "paused":
            self.log.flush()
            if self._paused_for_divergence and self.monitors == 0 and self.divergence.policy.action == "auto":
                reason = f"divergence at step {self.step_index - 1}: the monitor left"
                if self.sync is None:
                    self._stop(reason, checkpoint=False)
                    break
                if self.sync.leader:
                    self.commands.submit(Stop(reason))
            if self.sync is not None:
                self._agree(wait=PAUSE_POLL_SECONDS)
                continue
            pending = self.commands.take(wait=PAUSE_POLL_SECONDS)
            if pending is not None:
                self._apply(*pending)
        if self.state == "stopping":
            return False
        self._set_lr(self.step_index)
        return True

    def _agree(self, wait: float = 0.0) -> None:
        """A sync step (DDP): rank 0's queued commands, any rank's stop and divergence, applied alike on
        every rank. ``wait``: rank 0 waits that long for a command first (while paused)."""
        local = self.commands.take_all(wait) if self.sync.leader else []
        agreed = self.sync.exchange(
            self.step_index,
            [command for command, _ in local],
            diverged_at=self._diverged[0] if self._diverged is not None else None,
            action=self._divergence_action() if self.sync.leader else "",
        )
        if agreed.diverged_rank is not None:
            self._act_on_divergence(agreed.action or "stop", agreed.diverged_rank, agreed.diverged_step)
        elif self.divergence is not None and self.state == "running":
            self.divergence.snapshot_if_due(self.step_index)  # at a sync step: every rank keeps the same one
        done = [on_done for _, on_done in local] if self.sync.leader else [None] * len(agreed.commands)
        for command, on_done in zip(agreed.commands, done, strict=True):
            self._apply(command, on_done)
        if agreed.stop_rank is not None:
            self._stop(f"{agreed.stop_signal} on rank {agreed.stop_rank}")

    def _apply(self, command: Command, on_done: Done | None = None) -> None:
        first = len(self.log)
        told = on_done is None

        def tell(event: Event) -> None:
            nonlocal told
            if not told:
                told = True
                on_done(event)

        self._tell = tell  # a race tells its start (race_start) long before it ends
        self._apply_one(command)
        if not told:
            tell(self.log.event_at(first) or self._emit("rejected", command=command.to_dict(), reason="nothing to do"))

    # -- a race (lrwatch.race) runs inside one command, in the training thread -------------------
    def tell(self, event: Event) -> None:
        """The command being applied has led to ``event`` (its sender may stop waiting)."""
        self._tell(event)

    def apply(self, command: Command, on_done: Done | None = None) -> None:
        """Apply ``command`` now (a ``Stop`` that ended a race, after the snapshot was restored)."""
        self._apply(command, on_done)

    def reject(self, command: Command, on_done: Done | None, reason: str) -> None:
        event = self._emit("rejected", command=command.to_dict(), reason=reason)
        if on_done is not None:
            on_done(event)

    def race_command(self, wait: float = 0.0) -> tuple[Command, Done | None] | None:
        """While a race runs: the next ``RaceEnd`` or ``Stop`` that came (waiting up to ``wait`` s);
        any other command is rejected, as it would change the run under the race."""
        while (pending := self.commands.take(wait)) is not None:
            command, on_done = pending
            if isinstance(command, (RaceEnd, Stop)):
                return command, on_done
            self.reject(command, on_done, "a race is running: escape (or lrwatch send RUN_DIR race-end) ends it")
        return None

    def keep_branch(self, timeline: Timeline | None, rows: list[tuple[float, float]], **why: Any) -> None:
        """A race's kept candidate: from the fork (this step) on, ``timeline`` (None: unchanged, a logged
        switch otherwise), and its ``(lr, loss)`` rows become the run's next steps. Switches scripted
        inside them land at the step after (visibly, as one given for the past)."""
        fork = self.step_index
        if timeline is not None:
            self._set_timeline(timeline)
            self._emit_switch(**why)
        for i, (lr, loss) in enumerate(rows):
            self._record(fork + i, lr, loss, watch_loss=False)
        self.step_index = end = fork + len(rows)
        self.steps_taken += len(rows)
        self.commands.postpone(fork, end)

    def _apply_one(self, command: Command) -> None:
        s = self.step_index
        try:
            if isinstance(command, (Switch, EditParams)) and not self.drive_lr:
                if not (self.control.take_over and isinstance(command, Switch)):
                    raise SpecError("switch first: " + TAKE_OVER if self.control.take_over else MONITOR_ONLY)
                self._take_over(command)
                return
            if isinstance(command, Checkpoint):
                if self.checkpoint("request") is None and (self.sync is None or self.sync.leader):  # rank 0 saves
                    raise SpecError("no checkpoint: pass model= to lrwatch.watch() to enable checkpoints")
            elif isinstance(command, Switch):
                self._set_timeline(self._timeline.switch(s, command.spec, command.anchor))
                self._emit_switch(requested=command.spec)
            elif isinstance(command, EditParams):
                self._set_timeline(self._timeline.edit(s, **dict(command.params)))
                seg = self._timeline.segments[-1]
                self._emit("edit", spec=str(seg.spec), params=dict(command.params), torch=seg.schedule.torch_line())
            elif isinstance(command, Pause):
                if self.state != "running":
                    raise SpecError(f"not running (the run is {self.state})")
                self.state = "paused"
                self._emit("pause")
            elif isinstance(command, Resume):
                if self.state != "paused":
                    raise SpecError(f"not paused (the run is {self.state})")
                self.state = "running"
                self._paused_for_divergence = False
                self._emit("resume")
            elif isinstance(command, Stop):
                if self.state not in ("running", "paused"):
                    raise SpecError(f"already {self.state}")
                self._stop(command.reason, checkpoint=not self._paused_for_divergence)  # keep the good one
            elif isinstance(command, FindLr):
                if self.sync is not None:
                    raise SpecError("the LR range test is not supported under DDP yet")
                if self.lr_finder is None:
                    raise SpecError("no LR range test here: it needs lrwatch.watch(..., train_step=, batches=, model=)")
                self.lr_finder()
            elif isinstance(command, Race):
                if self.sync is not None:
                    raise SpecError("the race is not supported under DDP yet: every rank would have to fork together")
                if not self.drive_lr:
                    raise SpecError("no race: " + (TAKE_OVER if self.control.take_over else MONITOR_ONLY))
                if self.racer is None:
                    raise SpecError("no race here: it needs lrwatch.watch(..., train_step=, batches=, model=)")
                self.racer(command)
            elif isinstance(command, RaceEnd):
                raise SpecError("no race is running")
            elif isinstance(command, Rollback):
                if self.divergence is None or not self.divergence.can_roll_back:
                    raise SpecError("no rollback: pass model= to lrwatch.watch() and keep a divergence policy")
                self._rollback()
        except SpecError as exc:
            self._emit("rejected", command=command.to_dict(), reason=str(exc))

    def _take_over(self, command: Switch) -> None:
        """The first switch of a run lrwatch only watched: from here lrwatch drives the LR, from the LR the
        last step used (``lr=``, or the initial LR for ``anchor=base``), and sets it before every optimizer
        step (the script's scheduler may go on)."""
        s = self.step_index
        spec = parse_spec(command.spec)
        if command.anchor is not None:
            spec = replace(spec, anchor=command.anchor)
        base = spec.lr or (self._timeline.initial_lr if spec.anchor == "base" else self.lr)  # lr=, base, or now
        self._set_timeline(self._timeline.take_over(s, spec, base))
        self.control.hand_over()
        self._emit_switch(requested=command.spec, took_over=True)
        self._emit("warning", message=f"lrwatch took over the LR at step {s} (from {self.lr:.4g}): it now sets it "
                   "before every optimizer step; the script's own scheduler no longer counts")  # fmt: skip

    def _set_timeline(self, timeline: Timeline) -> None:
        self._timeline = timeline
        self.control.set_timeline(timeline)

    def _set_lr(self, step: int) -> None:
        self.control.set(step)

    # -- running ----------------------------------------------------------------------------
    def run(self, train: Callable[[Engine], None]) -> None:
        """Run ``train(self)`` here; any exception ends the run in state ``error`` (not re-raised)."""
        try:
            train(self)
        except KeyboardInterrupt:
            self.interrupted()
            self.finish()
            raise
        except BaseException as exc:  # the app stays up and shows it; the run dir is closed below
            self.finish(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            self.finish()

    def start_thread(self, train: Callable[[Engine], None]) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(train,), name="lrwatch-train", daemon=True)
        thread.start()
        return thread
