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

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from lrwatch.live.host import current_host
from lrwatch.protocol.commands import Switch
from lrwatch.record.rundir import default_run_dir, read_metric_rows
from lrwatch.run.checkpoints import (
    CheckpointError,
    WeightsSnapshot,
    check_resume,
    load_resume_state,
    load_state,
    parse_state,
    run_dir_of,
    set_rng_state,
)
from lrwatch.run.distributed import RankSync, join_ranks
from lrwatch.run.divergence import DivergencePolicy
from lrwatch.run.engine import Engine
from lrwatch.run.gpu import probe_gpu
from lrwatch.run.monitor import Monitor, watch_exit
from lrwatch.schedule.spec import parse_spec, parse_switch
from lrwatch.schedule.timeline import Timeline

__all__ = ["watch"]


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
    resume_step: int | None = None,
    extra_state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    train_step: Callable[[Any], Any] | None = None,
    batches: Callable[[int], Iterable[Any]] | None = None,
    evaluate: Callable[[], Any] | None = None,
    on_divergence: str | None = None,
    spike_factor: float | None = None,
    tokens_per_step: float | None = None,
) -> Monitor:
    """Start watching (and, by default, driving) ``optimizer``'s learning rate.

    Args:
        steps_per_epoch: optimizer steps per epoch (``len(loader)``); schedule times are in epochs. ``None``:
            unknown; an epoch is then one step (the x axis counts steps), ``metrics.csv``'s epoch column is empty.
        epochs: the planned length, for the preview and fitted defaults (``None``: unknown).
        total_steps: the planned length in steps, when it is not ``steps_per_epoch × epochs`` (a framework
            that knows its optimizer steps, e.g. Lightning's ``estimated_stepping_batches``). Unknown (neither
            given): a default fitted to the rest of the run is refused until the length is given
            (``lrwatch send RUN_DIR length N``, or the monitor's prompt).
        schedule: initial spec, e.g. ``"cosine:T_max=25,eta_min=0.001"`` or ``"wsd:warmup=2000steps"`` (times in
            epochs, or ``Nsteps``). Default ``cosine``; ``constant`` when the run's length is unknown. On a
            resume, a schedule that differs from the one in force is applied as a new, logged switch.
        lr: initial LR (default: the optimizer's group 0 LR).
        per_epoch: change the LR only at epoch boundaries, like ``scheduler.step()`` once per epoch.
        model: enables checkpoints (``k`` key, ``checkpoint_every``, and one on every stop).
        drive_lr: ``False``: monitor-only; the loop's own scheduler sets the LR, switching is off.
        take_over: with ``drive_lr=False``: the first switch hands the LR to lrwatch, which from then on
            sets it before every ``optimizer.step()``, whatever the loop's own scheduler does.
        switches: ``"EPOCH:SPEC"`` (or ``"Nsteps:SPEC"``) switches applied when the run gets there, as key
            presses would be.
        resume: a run directory with a checkpoint, or a checkpoint file (a cooldown's fork, say): restore model,
            optimizer, timeline, step, RNG states. One with lrwatch's state only (``lrwatch_state.json``: a
            script that saves its own model) restores the timeline and step; the script loads its model and
            optimizer itself.
        resume_step: the step the loop goes on from, when it is not the one lrwatch saved (the script's own
            checkpoint is older): the run directory's rows from there on are dropped, the timeline is kept.
        extra_state: more things to checkpoint: ``torch.Generator`` or anything with ``state_dict``.
        train_step, batches: for lrwatch to run steps itself (:meth:`Monitor.find_lr`): ``train_step(batch)``
            does forward, backward and ``optimizer.step()`` and returns the loss; ``batches(start_step)``
            yields the batches from that step on, in the order training sees them. With them (and ``model``)
            lrwatch can also race schedules (:meth:`Monitor.race`, the ``f`` key): after a race keeps a
            candidate, ``monitor.step_index`` has moved ahead by its steps; continue from there.
        evaluate: the validation a race ranks candidates by: returns ``val_loss`` (a float, a tuple that
            starts with it, or a dict of metrics). Without it, candidates are ranked by train loss.
        tokens_per_step: what a step holds (tokens, or samples), for the ``tokens_per_s`` series beside
            ``steps_per_s``; or give ``monitor.step(loss, tokens=n)`` each step.
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
    if total_steps is None:
        total_steps = host.total_steps
    total = total_steps if total_steps is not None else (steps_per_epoch * epochs if epochs else None)
    given = list(host.switches)  # lrwatch run --schedule/--switch: the command line's, after the script's own
    if host.schedule is not None and take_over and not drive_lr:
        given.insert(0, f"0steps:{host.schedule}")  # a script lrwatch only watched: taken over at its first step
    elif host.schedule is not None:
        schedule = host.schedule
    scripted = [(when.to_steps(steps_per_epoch), spec) for when, spec in map(parse_switch, (*switches, *given))]
    if resume is not None:
        state = load_resume_state(resume)
        start_step, saved_timeline, saved_switches = parse_state(state["lrwatch"])
        start_step = start_step if resume_step is None else int(resume_step)
        timeline = saved_timeline.with_length(total if total is not None else saved_timeline.total_steps)
        directory = run_dir_of(resume)
        try:  # everything checked before anything changes: the run directory stays byte for byte as it was
            check_resume(state, model=model, optimizer=optimizer, total_steps=timeline.total_steps)
        except CheckpointError as exc:
            raise CheckpointError(f"--resume {resume}: {exc}") from None
    else:
        timeline = Timeline.start(
            schedule or ("cosine" if total is not None else "constant"),
            lr=lr,
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            per_epoch=per_epoch,
            steps_only=not epochs_known,
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
        tokens_per_step=tokens_per_step,
    )
    monitor = Monitor(engine, model=model, extra_state=extra_state, checkpoint_every=checkpoint_every)
    monitor.train_step, monitor.batches, monitor.evaluate = train_step, batches, evaluate
    if train_step is not None and batches is not None and model is not None and sync is None:
        engine.lr_finder = monitor.find_lr  # the F key and lrwatch send find-lr
        engine.racer = lambda command: monitor._race(command, ask=True)  # the f key and lrwatch send race
    if model is not None and leader:
        engine.checkpointer = monitor._save  # saved once, by rank 0; --resume restores every rank
    if resume is not None:
        engine.plateau.load_state_dict(state["lrwatch"].get("plateau"))
        if model is not None and state["model"] is not None:
            model.load_state_dict(state["model"])
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        if state["rng"] is not None:
            set_rng_state(state["rng"])
        drives_from = state["lrwatch"].get("drives_from")
        if take_over and not drive_lr and drives_from is not None:
            engine.control.hand_over_at = int(drives_from)  # lrwatch had taken the LR over there
        for name, obj in monitor.extra_state.items():
            if name in state["extra"]:
                load_state(obj, state["extra"][name])
        pending = {(step, json_key(cmd.to_dict())) for step, cmd in saved_switches}
        applied = {(seg.start_step, str(seg.spec)) for seg in timeline.segments}
        for step, cmd in saved_switches:
            engine.schedule_command(step, cmd)
        for at, spec in scripted:
            if (round(at), spec) in applied:
                continue  # the same command line given again on a resume: already in the timeline
            step = max(round(at), start_step)  # one given for the past lands now, visibly
            if (step, json_key(Switch(spec).to_dict())) not in pending:
                engine.schedule_command(step, Switch(spec))
        active = timeline.segment_at(start_step).spec
        if schedule is not None and str(parse_spec(schedule)) != str(active):
            engine.submit(Switch(schedule))
        if leader:
            _load_history(engine, directory, start_step)
    else:
        for at, spec in scripted:
            engine.schedule_command(round(at), Switch(spec))
    gpu_trouble = probe_gpu(engine, optimizer, sync is not None) if leader else None
    server = host.attach(engine, sync)
    if sync is not None:
        join_ranks(sync, engine, server.record.socket if server is not None else None)
    engine.begin()
    if gpu_trouble:
        engine.warn(gpu_trouble)
    watch_exit(monitor)
    return monitor


def _load_history(engine: Engine, run_dir: Path, before_step: int) -> None:
    """Fill the history with the rows a resumed run already logged, so its plots show the whole run."""
    for row in read_metric_rows(run_dir / "metrics.csv"):
        if len(row) == 4:
            if row[0] < before_step:
                engine.history.append(*row, row.metrics)
        elif row[0] <= before_step:
            engine.history.append_epoch(*row)


def json_key(command: dict[str, Any]) -> str:
    import json

    return json.dumps(command, sort_keys=True)
