"""What each command does to a run, at a step boundary, in the training thread.

:func:`act` looks up the command's handler in :data:`HANDLERS` (one small function per command type);
a handler changes the run through the engine's training-side methods and logs the event it led to, or
raises :class:`~lrwatch.schedule.spec.SpecError` with the one-line reason, which :func:`act` logs as a
``rejected`` event (nothing changed). The engine decides *when* (:meth:`Engine._at_boundary`); this module
decides *what*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from lrwatch.protocol.commands import (
    MONITOR_ONLY,
    TAKE_OVER,
    Checkpoint,
    Command,
    EditParams,
    FindLr,
    Length,
    Pause,
    Race,
    RaceEnd,
    Resume,
    Rollback,
    Stop,
    Switch,
    parse_length,
)
from lrwatch.schedule.spec import SpecError, parse_spec

SELF_STEPPING = "it needs lrwatch.watch(..., train_step=, batches=, model=)"


def act(engine: Any, command: Command) -> None:
    """Apply ``command`` to ``engine``'s run now; a refusal is a ``rejected`` event with the reason."""
    try:
        if isinstance(command, (Switch, EditParams)) and not engine.drive_lr:
            if not engine.control.take_over:
                raise SpecError(MONITOR_ONLY)
            if isinstance(command, EditParams):
                edit_script(engine, command)  # the script's mapped spec edits like any; else refused
                return
            take_over(engine, command)
            return
        HANDLERS[type(command)](engine, command)
    except SpecError as exc:
        engine.emit("rejected", command=command.to_dict(), reason=str(exc))


def switch(engine: Any, command: Switch) -> None:
    """Switch at this step. A ``cooldown`` forks: a checkpoint of the stable phase is saved first (its own file,
    ``checkpoint-fork-STEP.pt``), and the run ends at the cooldown's last step."""
    timeline = engine.timeline.switch(engine.step_index, command.spec, command.anchor)  # SpecError: rejected
    if timeline.ends_at is not None:
        engine.checkpoint("fork")
    engine.set_timeline(timeline)
    engine.tell(engine.emit_switch(requested=command.spec))  # the answer to lrwatch send, after the fork's checkpoint
    zero_start(engine)


def zero_start(engine: Any) -> None:
    """A warning when the segment just started continues from an LR of 0 (a warmup's first step, a finished
    decay): every kind but a warmup multiplies it, so it stays at 0."""
    seg = engine.timeline.segments[-1]
    if seg.base_lr == 0 and seg.schedule.kind != "cooldown":
        engine.warn(f"{seg.spec} starts from lr 0 (the LR in force), so it stays at 0: give lr=X, or anchor=base")


def edit(engine: Any, command: EditParams) -> None:
    engine.set_timeline(engine.timeline.edit(engine.step_index, **dict(command.params)))
    seg = engine.timeline.segments[-1]
    engine.emit("edit", spec=str(seg.spec), params=dict(command.params), torch=seg.schedule.torch_line())


def edit_script(engine: Any, command: EditParams) -> None:
    """An edit of the script's own schedule: its mapped spec changes as any spec would (origin and base LR
    kept), and lrwatch takes the LR over with it; an observed schedule, or one set by hand, has no spec."""
    s = engine.step_index
    why = engine.timeline.edit_refusal(s)
    if why is not None or not engine.timeline.is_script(engine.timeline.segment_at(s)):
        raise SpecError(why or ("switch first: " + TAKE_OVER))
    timeline = engine.timeline.edit(s, **dict(command.params))  # SpecError: rejected
    engine.set_timeline(timeline)
    engine.control.hand_over(s)
    seg = timeline.segments[-1]
    engine.tell(engine.emit("edit", spec=str(seg.spec), params=dict(command.params), torch=seg.schedule.torch_line(),
                            took_over=True))  # fmt: skip
    engine.warn(f"lrwatch took over the LR at step {s} with the script's schedule, edited: it now sets it "
                "before every optimizer step; the script's own scheduler no longer counts")  # fmt: skip


def length(engine: Any, command: Length) -> None:
    """The run's length from now on: the preview, ETA and progress follow; defaults fitted later use it."""
    span = parse_length(command.value)
    if span is None:
        raise SpecError(f"length must be > 0: epochs, or Nsteps (got {command.value!r})")
    total = round(span.to_steps(engine.timeline.steps_per_epoch))
    if total <= engine.step_index:
        raise SpecError(f"length {command.value} is not after this step ({engine.step_index}): give a longer one")
    if engine.timeline.ends_at is not None:
        raise SpecError("the run ends with its cooldown: switch to another schedule first")
    engine.set_timeline(engine.timeline.with_length(total))
    engine.emit("length", total_steps=total, value=command.value)


def take_over(engine: Any, command: Switch) -> None:
    """The first switch of a run lrwatch only watched: from here lrwatch drives the LR, from the LR the
    last step used (``lr=``, or the initial LR for ``anchor=base``), and sets it before every optimizer
    step (the script's scheduler may go on)."""
    s = engine.step_index
    spec = parse_spec(command.spec)
    if command.anchor is not None:
        spec = replace(spec, anchor=command.anchor)
    base = spec.lr or (engine.timeline.initial_lr if spec.anchor == "base" else engine.lr)  # lr=, base, or now
    timeline = engine.timeline.take_over(s, spec, base)  # SpecError: rejected
    if timeline.ends_at is not None:
        engine.checkpoint("fork")
    engine.set_timeline(timeline)
    engine.control.hand_over(s)
    engine.tell(engine.emit_switch(requested=command.spec, took_over=True))
    engine.warn(f"lrwatch took over the LR at step {s} (from {engine.lr:.4g}): it now sets it before every "
                "optimizer step; the script's own scheduler no longer counts")  # fmt: skip


def checkpoint(engine: Any, _command: Checkpoint) -> None:
    if engine.checkpoint("request") is None and (engine.sync is None or engine.sync.leader):  # rank 0 saves
        if engine.checkpointer is not None:
            raise SpecError(f"checkpoint not saved: {engine.checkpoint_error or 'it could not be written'}"
                            " (the previous one is intact; training goes on)")  # fmt: skip
        raise SpecError("no checkpoint: pass model= to lrwatch.watch() to enable checkpoints")


def pause(engine: Any, _command: Pause) -> None:
    if engine.state != "running":
        raise SpecError(f"not running (the run is {engine.state})")
    engine.state = "paused"
    engine.emit("pause")


def resume(engine: Any, _command: Resume) -> None:
    if engine.state != "paused":
        raise SpecError(f"not paused (the run is {engine.state})")
    engine.state = "running"
    engine.divergence.paused = False
    engine.emit("resume")


def stop(engine: Any, command: Stop) -> None:
    if engine.state not in ("running", "paused"):
        raise SpecError(f"already {engine.state}")
    engine.stop_now(
        command.reason, checkpoint=not engine.divergence.paused
    )  # paused at a divergence: keep the good one


def find_lr(engine: Any, _command: FindLr) -> None:
    if engine.sync is not None:
        raise SpecError("the LR range test is not supported under DDP yet")
    if engine.lr_finder is None:
        raise SpecError("no LR range test here: " + SELF_STEPPING)
    engine.lr_finder()


def race(engine: Any, command: Race) -> None:
    if engine.sync is not None:
        raise SpecError("the race is not supported under DDP yet: every rank would have to fork together")
    if not engine.drive_lr:
        raise SpecError("no race: " + (TAKE_OVER if engine.control.take_over else MONITOR_ONLY))
    if engine.racer is None:
        raise SpecError("no race here: " + SELF_STEPPING)
    engine.racer(command)


def race_end(_engine: Any, _command: RaceEnd) -> None:
    raise SpecError("no race is running")  # a running race takes its own ends (Engine.race_command)


def rollback(engine: Any, _command: Rollback) -> None:
    if not engine.divergence.can_roll_back:
        raise SpecError("no rollback: pass model= to lrwatch.watch() and keep a divergence policy")
    engine.divergence.rollback()


HANDLERS: dict[type, Callable[[Any, Any], None]] = {
    Switch: switch,
    EditParams: edit,
    Length: length,
    Checkpoint: checkpoint,
    Pause: pause,
    Resume: resume,
    Stop: stop,
    FindLr: find_lr,
    Race: race,
    RaceEnd: race_end,
    Rollback: rollback,
}
