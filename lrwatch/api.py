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
import os
import random
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from lrwatch.console import HeadlessPrinter
from lrwatch.distributed import RankSync, install_stop_signals, rank_error
from lrwatch.divergence import DivergencePolicy
from lrwatch.engine import Engine
from lrwatch.gpu import GpuProbe
from lrwatch.losses import DeviceLosses, on_device
from lrwatch.protocol import Command, Event, Switch, command_from_dict
from lrwatch.rundir import default_run_dir, read_metric_rows
from lrwatch.schedules import SpecError, parse_spec
from lrwatch.server import RunServer
from lrwatch.sockets import new_record
from lrwatch.timeline import Timeline

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 2  # 1: lrwatch's state at the top level (still loaded); 2: under "lrwatch"
STATE_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely; the message is one line for the user."""


@dataclass
class Host:
    """Where a watched loop's monitor goes: set by ``lrwatch run`` / ``lrwatch demo``, else headless.

    ``engines`` receives the engine once :func:`watch` made it (the app polls for it).
    """

    headless: bool = True
    run_dir: Path | None = None
    resume: Path | None = None
    log: TextIO | None = field(default_factory=lambda: sys.stderr)
    engine: Engine | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    on_engine: Any = None  # called with the engine before its first step (tests, scripted stops)
    on_divergence: str | None = None  # default: pause with the monitor, stop headless
    spike_factor: float = 10.0
    error: BaseException | None = None  # what the loop raised, if it raised
    serve: bool = True  # serve the run's socket (lrwatch attach, send, ls)
    on_hangup: str = "detach"  # "stop": the run stops when the monitor that started it is lost
    spawned: bool = False  # this process is a run started for a monitor (divergence: pause only while watched)

    @classmethod
    def from_environment(cls) -> Host:
        """The host of a process ``lrwatch run --nproc-per-node`` started through torchrun (its settings
        come in ``LRWATCH_*`` variables), else the default: headless."""
        env = os.environ
        if "LRWATCH_RUN_DIR" not in env:
            return cls()
        return cls(
            run_dir=Path(env["LRWATCH_RUN_DIR"]),
            resume=Path(env["LRWATCH_RESUME"]) if env.get("LRWATCH_RESUME") else None,
            on_divergence=env.get("LRWATCH_ON_DIVERGENCE") or None,
            spike_factor=float(env.get("LRWATCH_SPIKE_FACTOR") or 10.0),
            on_hangup=env.get("LRWATCH_ON_HANGUP") or "detach",
            spawned=env.get("LRWATCH_SPAWNED") == "1",
        )

    def attach(self, engine: Engine, sync: RankSync | None = None) -> RunServer | None:
        """Take ``engine``: its headless lines and socket (rank 0 only, under DDP)."""
        self.engine = engine
        server = None
        if sync is None or sync.leader:
            if self.log is not None:
                engine.add_listener(HeadlessPrinter(engine, self.log))
            if self.serve and os.environ.get("LRWATCH_NO_SOCKET") != "1":
                lost = sync.peer_lost if sync is not None else None
                server = serve(engine, on_owner_lost=self.on_hangup, on_rank_lost=lost)  # kept until the run ends
        if self.on_engine is not None:
            self.on_engine(engine)
        self.ready.set()
        return server


def serve(
    engine: Engine, *, on_owner_lost: str = "detach", on_rank_lost: Callable[[str, str | None], None] | None = None
) -> RunServer | None:
    """Serve ``engine``'s socket until its run finishes; a socket that cannot be served is a warning, not an error."""
    if engine.run_dir is None:
        return None
    try:
        record = new_record(engine.run_dir)
        server = RunServer(engine, record, on_owner_lost=on_owner_lost, on_rank_lost=on_rank_lost)
        server.start()
    except OSError as exc:
        engine.warn(f"no socket for lrwatch attach/send ({exc}); training goes on")
        return None

    def on_event(event: Event) -> None:
        if event.kind == "finish":
            server.close()  # in the training thread, after the run's last event: clients get it too

    engine.add_listener(on_event)
    return server


_host_lock = threading.Lock()
_host: Host | None = None


def current_host() -> Host:
    global _host
    with _host_lock:
        if _host is None:
            _host = Host.from_environment()
        return _host


@contextlib.contextmanager
def using_host(host: Host) -> Iterator[Host]:
    """Make ``host`` the one :func:`watch` attaches to, for the duration of the block."""
    global _host
    with _host_lock:
        previous, _host = _host, host
    try:
        yield host
    finally:
        with _host_lock:
            _host = previous


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

    # -- the loop's side --------------------------------------------------------------------
    @property
    def start_step(self) -> int:
        """The first step to run: 0, or where a resumed run stopped."""
        return self.engine.start_step

    @property
    def start_epoch(self) -> int:
        return self.engine.start_step // self.engine.timeline.steps_per_epoch

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
        step, timeline, scheduled = _parse_state(state)
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
            "extra": {name: _state_of(obj) for name, obj in self.extra_state.items()},
        }
        path = engine.run_dir / CHECKPOINT_NAME
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path


def _parse_state(state: dict[str, Any]) -> tuple[int, Timeline, list[tuple[int, Command]]]:
    """``(step, timeline, scheduled commands)`` of :meth:`Monitor.state_dict`; ``CheckpointError`` if malformed."""
    try:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"format {state.get('format')!r}, expected {STATE_FORMAT}")
        scheduled = [(int(step), command_from_dict(command)) for step, command in state["scripted"]]
        return int(state["step"]), Timeline.from_dict(state["timeline"]), scheduled
    except (KeyError, TypeError, ValueError, SpecError) as exc:
        raise CheckpointError(f"not lrwatch's state ({exc})") from None


class WeightsSnapshot:
    """In-memory copies of model and optimizer state, on their own device, for rollbacks."""

    def __init__(self, model: Any, optimizer: Any) -> None:
        self.model = model
        self.optimizer = optimizer

    def snapshot(self) -> tuple[Any, Any]:
        import copy

        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return model_state, copy.deepcopy(self.optimizer.state_dict())

    def restore(self, state: tuple[Any, Any]) -> None:
        model_state, optimizer_state = state
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(optimizer_state)
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr  # the LR stays the engine's to set


def _state_of(obj: Any) -> Any:
    return obj.get_state() if hasattr(obj, "get_state") else obj.state_dict()


def _load_state(obj: Any, state: Any) -> None:
    if hasattr(obj, "set_state"):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states, as tensors and plain values only."""
    import torch

    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": [has_gauss, cached]},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    keys = numpy_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy_state["pos"], *numpy_state["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The latest checkpoint of ``run_dir``, loaded with ``torch.load(..., weights_only=True)``."""
    import torch

    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"{run_dir}: no {CHECKPOINT_NAME} (save one with the k key or --checkpoint-every)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe or corrupt pickle: refuse it, name the reason in one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: refused, it does not load with weights_only=True ({reason})") from None
    if not isinstance(state, dict) or state.get("format") not in (1, CHECKPOINT_FORMAT):
        raise CheckpointError(f"{path}: not an lrwatch checkpoint (format {CHECKPOINT_FORMAT})")
    if state["format"] == 1:  # lrwatch's state was at the top level
        keys = ("step", "timeline", "scripted")
        state = {**state, "lrwatch": {"format": STATE_FORMAT, **{k: state[k] for k in keys}}}
    return state


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
    steps_per_epoch: int,
    epochs: int | None = None,
    schedule: str | None = None,
    lr: float | None = None,
    per_epoch: bool = False,
    model: Any = None,
    run_dir: str | Path | None = None,
    drive_lr: bool = True,
    switches: Sequence[str] = (),
    val_names: Sequence[str] = ("val_loss", "val_acc"),
    checkpoint_every: float | None = None,
    resume: str | Path | None = None,
    extra_state: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    on_divergence: str | None = None,
    spike_factor: float | None = None,
) -> Monitor:
    """Start watching (and, by default, driving) ``optimizer``'s learning rate.

    Args:
        steps_per_epoch: optimizer steps per epoch (``len(loader)``); schedule times are in epochs.
        epochs: the planned length, for the preview and fitted defaults (``None``: unknown).
        schedule: initial spec, e.g. ``"cosine:T_max=25,eta_min=0.001"`` (default ``cosine``). On a resume,
            a schedule that differs from the one in force is applied as a new, logged switch.
        lr: initial LR (default: the optimizer's group 0 LR).
        per_epoch: change the LR only at epoch boundaries, like ``scheduler.step()`` once per epoch.
        model: enables checkpoints (``k`` key, ``checkpoint_every``, and one on every stop).
        drive_lr: ``False``: monitor-only; the loop's own scheduler sets the LR, switching is off.
        switches: ``"EPOCH:SPEC"`` switches applied when the run gets there, as key presses would be.
        resume: a run directory with a checkpoint: restore model, optimizer, timeline, step, RNG states.
        extra_state: more things to checkpoint: ``torch.Generator`` or anything with ``state_dict``.
        on_divergence: ``pause`` (the monitor's default), ``stop`` (headless default) or ``rollback``, when a
            loss is NaN/Inf or above ``spike_factor`` (default 10) times its recent mean.
    """
    host = current_host()
    sync = RankSync.from_environment()  # DDP: every rank is here; rank 0 leads
    leader = sync is None or sync.leader
    resume = Path(resume) if resume is not None else host.resume
    if lr is None:
        lr = float(optimizer.param_groups[0]["lr"])
    total = steps_per_epoch * epochs if epochs else None
    scripted = [parse_switch(text) for text in switches]
    if resume is not None:
        state = load_checkpoint(resume)
        start_step, saved_timeline, saved_switches = _parse_state(state["lrwatch"])
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
        config=dict(config or {}),
        drive_lr=drive_lr,
        start_step=start_step,
        divergence=policy,
        snapshotter=WeightsSnapshot(model, optimizer) if model is not None else None,
    )
    monitor = Monitor(engine, model=model, extra_state=extra_state, checkpoint_every=checkpoint_every)
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
                _load_state(obj, state["extra"][name])
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
    gpu_trouble = _probe_gpu(engine, optimizer, sync) if leader else None
    server = host.attach(engine, sync)
    if sync is not None:
        _join_ranks(sync, engine, server.record.socket if server is not None else None)
    engine.begin()
    if gpu_trouble:
        engine.warn(gpu_trouble)
    _watch_exit(monitor)
    return monitor


def _probe_gpu(engine: Engine, optimizer: Any, sync: RankSync | None) -> str | None:
    """A run on CUDA shows its GPU in the run panel (:mod:`lrwatch.gpu`). A probe that fails is left
    out; the warning to log once the run has started is returned."""
    device = next((p.device for g in optimizer.param_groups for p in g["params"]), None)
    if getattr(device, "type", "cpu") != "cuda":
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if sync is not None else 1
    try:
        engine.gpu = GpuProbe(device.index or 0, local_devices=local).start()
    except Exception as exc:
        return f"no GPU readings in the run panel ({exc})"
    engine.add_listener(lambda event: engine.gpu.close() if event.kind == "finish" else None)
    return None


def _join_ranks(sync: RankSync, engine: Engine, leader_socket: str | None) -> None:
    """DDP: commands agreed at sync steps; the ranks watch each other's links; signals stop them all."""
    engine.sync = sync
    if engine.divergence is not None:
        engine.divergence.auto_snapshot = False  # snapshots at sync steps, the same on every rank
    sync.link_to_leader(sync.share_leader_socket(leader_socket))
    install_stop_signals(sync)
    ending: dict[str, str] = {}

    def on_event(event: Event) -> None:
        if event.kind == "error":
            ending["error"] = str(event.data.get("message", ""))
        elif event.kind == "finish":
            sync.close(ending.get("error"))

    engine.add_listener(on_event)


_open_monitors: list[Monitor] = []


def _watch_exit(monitor: Monitor) -> None:
    """End ``monitor``'s run when the script ends: at exit (a script that never calls ``close()``), and
    with the exception that ends a script (so that the run records it as an error, not as finished)."""
    atexit.register(monitor.close)
    if not _open_monitors:
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


def run_loop(host: Host, target: Any) -> None:
    """Run ``target()`` (a training function or a script) under ``host``; end the run on any exit."""
    with using_host(host):
        try:
            target()
        except SystemExit as exc:  # a script's sys.exit(): 0 ends the run, anything else is an error
            _finish(host, None if exc.code in (0, None) else RuntimeError(f"the script exited with {exc.code}"))
            raise
        except KeyboardInterrupt:
            if host.engine is not None:
                host.engine.interrupted()
            _finish(host)
            raise
        except BaseException as exc:
            _finish(host, exc)
            if not isinstance(exc, Exception):
                raise
            host.error = exc
        else:
            _finish(host)


def _finish(host: Host, error: BaseException | None = None) -> None:
    if host.engine is not None:
        host.engine.finish(error)
