"""lrwatch's checkpoints: what is saved, how it loads (``weights_only=True`` only), RNG states, rollback snapshots.

``RUN_DIR/checkpoint.pt`` holds ``{"format": 2, "lrwatch": <Monitor.state_dict()>, "reason", "model",
"optimizer", "rng", "extra"}``: tensors and plain types only, so ``torch.load(..., weights_only=True)``
reads it. Format 1 (lrwatch's state at the top level) still loads.

A run whose script saves its own model (``lrwatch run`` on a script with no ``lrwatch.watch()``) has
``RUN_DIR/lrwatch_state.json`` instead: lrwatch's state alone, as JSON (:func:`save_state_file`). A run
directory with neither is continued from what it recorded (:func:`recorded_state`: the timeline its events
rebuild, the step after its last row). :func:`load_resume_state` picks the first of the three.
"""

from __future__ import annotations

import copy
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lrwatch.protocol.commands import Command, command_from_dict
from lrwatch.record.safefile import replace_text
from lrwatch.schedule.spec import SpecError
from lrwatch.schedule.timeline import Timeline

CHECKPOINT_NAME = "checkpoint.pt"
STATE_NAME = "lrwatch_state.json"
CHECKPOINT_FORMAT = 2  # 1: lrwatch's state at the top level (still loaded); 2: under "lrwatch"
STATE_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded safely; the message is one line for the user."""


def parse_state(state: dict[str, Any]) -> tuple[int, Timeline, list[tuple[int, Command]]]:
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
        model_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        return model_state, copy.deepcopy(self.optimizer.state_dict())

    def restore(self, state: tuple[Any, Any]) -> None:
        """Put ``state`` back; it stays intact for another restore (the optimizer gets a copy: its
        ``load_state_dict`` keeps tensors already on the right device, and would train them in place)."""
        model_state, optimizer_state = state
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.model.load_state_dict(model_state)
        self.optimizer.load_state_dict(copy.deepcopy(optimizer_state))
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr  # the LR stays the engine's to set


def tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in ``obj`` (a state dict, nested)."""
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        return obj.element_size() * obj.nelement()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def _to_host(obj: Any) -> Any:
    """A deep copy with every tensor cloned to the CPU (a snapshot the training cannot touch)."""
    if hasattr(obj, "detach") and hasattr(obj, "to"):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_host(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_host(v) for v in obj)
    return copy.deepcopy(obj)


@dataclass
class HostState:
    """Model, optimizer and RNG states, copied to host memory, for the race and the range test (a rollback's
    :class:`WeightsSnapshot` stays on the device: it is taken often); :meth:`load` puts them back exactly
    (the optimizer gets a copy: it would otherwise train its state tensors in place)."""

    weights: dict[str, Any]
    optimizer: dict[str, Any]
    rng: dict[str, Any]

    @classmethod
    def take(cls, model: Any, optimizer: Any) -> HostState:
        return cls(_to_host(model.state_dict()), _to_host(optimizer.state_dict()), rng_state())

    def load(self, model: Any, optimizer: Any) -> None:
        lrs = [group["lr"] for group in optimizer.param_groups]
        model.load_state_dict(self.weights)
        optimizer.load_state_dict(_to_host(self.optimizer))
        for group, lr in zip(optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr  # the LR is set per step from a timeline
        set_rng_state(self.rng)


def state_of(obj: Any) -> Any:
    return obj.get_state() if hasattr(obj, "get_state") else obj.state_dict()


def load_state(obj: Any, state: Any) -> None:
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


def checkpoint_name(reason: str, step: int) -> str:
    """The file a checkpoint goes to: ``checkpoint.pt``, the latest; a cooldown's fork keeps its own
    (``checkpoint-fork-STEP.pt``: the stable phase, to train on from with a longer plan)."""
    return f"checkpoint-fork-{step}.pt" if reason == "fork" else CHECKPOINT_NAME


def run_dir_of(resume: str | Path) -> Path:
    """The run directory of ``--resume``: a run directory, or a checkpoint file in one."""
    path = Path(resume)
    return path.parent if path.is_file() else path


def load_checkpoint(run_dir: str | Path) -> dict[str, Any]:
    """The latest checkpoint of ``run_dir`` (or the checkpoint file given), loaded with
    ``torch.load(..., weights_only=True)``."""
    import torch

    path = Path(run_dir) if Path(run_dir).is_file() else Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"{run_dir}: no {CHECKPOINT_NAME} (save one with the k key or --checkpoint-every)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unsafe or corrupt pickle: refuse it, name the reason in one line
        raise CheckpointError(f"{path}: refused, it does not load with weights_only=True ({_refusal(exc)})") from None
    if not isinstance(state, dict) or state.get("format") not in (1, CHECKPOINT_FORMAT):
        raise CheckpointError(f"{path}: not an lrwatch checkpoint (format {CHECKPOINT_FORMAT})")
    if state["format"] == 1:  # lrwatch's state was at the top level
        keys = ("step", "timeline", "scripted")
        state = {**state, "lrwatch": {"format": STATE_FORMAT, **{k: state[k] for k in keys}}}
    return state


def _refusal(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` refused, in one line: the global it refused, when it says."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        found = re.search(r"GLOBAL ([\w.]+)", line)
        if found:
            return f"it holds {found.group(1)}, a global that weights_only=True refuses"
    return lines[0][:200] if lines else type(exc).__name__


def check_resume(state: dict[str, Any], *, model: Any, optimizer: Any, total_steps: int | None) -> None:
    """Refuse (``CheckpointError``, one line) a resume that cannot go on, before anything is changed: a model
    or optimizer state of another model, a missing RNG state, a step past the run's end."""
    step, _timeline, _scheduled = parse_state(state["lrwatch"])
    if step < 0 or (total_steps is not None and step > total_steps):
        raise CheckpointError(f"its step {step:,} is past the run's end ({total_steps:,} steps): not this run's")
    if model is not None and state.get("model") is not None:
        _check_model(model.state_dict(), state["model"])
        if not isinstance(state.get("rng"), dict) or not {"torch", "numpy", "python"} <= set(state["rng"]):
            raise CheckpointError("it holds no RNG state (torch, numpy, Python): it would not continue exactly")
    if state.get("optimizer") is not None:
        _check_optimizer(optimizer.state_dict(), state["optimizer"])


def _check_model(mine: dict[str, Any], saved: Any) -> None:
    if not isinstance(saved, dict):
        raise CheckpointError("its model state is not a state dict")
    missing, unexpected = sorted(set(mine) - set(saved)), sorted(set(saved) - set(mine))
    if missing or unexpected:
        parts = [f"{label} {', '.join(keys[:3])}{' …' if len(keys) > 3 else ''}"
                 for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]  # fmt: skip
        raise CheckpointError(f"it is a checkpoint of another model ({'; '.join(parts)})")
    for key, tensor in mine.items():
        theirs = saved[key]
        if hasattr(tensor, "shape") and tuple(getattr(theirs, "shape", ())) != tuple(tensor.shape):
            got, want = tuple(getattr(theirs, "shape", ())), tuple(tensor.shape)
            raise CheckpointError(f"it is a checkpoint of another model ({key} is {got} there, {want} here)")


def _check_optimizer(mine: dict[str, Any], saved: Any) -> None:
    try:
        theirs = [len(group["params"]) for group in saved["param_groups"]]
    except (TypeError, KeyError):
        raise CheckpointError("its optimizer state is not an optimizer's state dict") from None
    ours = [len(group["params"]) for group in mine["param_groups"]]
    if theirs != ours:
        raise CheckpointError(f"its optimizer has parameter groups of {theirs} tensors, this one {ours}")


def save_state_file(run_dir: str | Path, state: dict[str, Any]) -> Path:
    """``RUN_DIR/lrwatch_state.json``: lrwatch's own state (``Monitor.state_dict()``), written atomically."""
    return replace_text(Path(run_dir) / STATE_NAME, json.dumps(state, allow_nan=False) + "\n")


def recorded_state(run_dir: str | Path) -> dict[str, Any]:
    """lrwatch's state as the run directory recorded it (no state was saved: a ``kill -9``): the timeline
    its events rebuild, the step after its last row, the step of its first take-over."""
    from lrwatch.record.reader import RunDirError, RunReader

    try:
        reader = RunReader(run_dir)
    except RunDirError as exc:
        raise CheckpointError(str(exc)) from None
    if reader.timeline is None:
        raise CheckpointError(f"{run_dir}: nothing to continue (no start event in events.jsonl)")
    steps = reader.history.column("step", 0, len(reader.history))
    taken = [e.step for e in reader.events if e.kind == "switch" and e.data.get("took_over")]
    state = {"format": STATE_FORMAT, "step": int(steps[-1]) + 1 if len(steps) else 0,
             "timeline": reader.timeline.to_dict(), "scripted": []}  # fmt: skip
    return state | ({"drives_from": taken[0]} if taken else {})


def load_resume_state(run_dir: str | Path) -> dict[str, Any]:
    """What a resume continues from, shaped as a checkpoint: a checkpoint file, or ``checkpoint.pt`` (model,
    optimizer, RNG states and lrwatch's state), else lrwatch's state alone (``lrwatch_state.json``, or what
    the run recorded), with ``model``, ``optimizer`` and ``rng`` None: the script restores those from its own
    checkpoint."""
    path = Path(run_dir)
    if path.is_file() or (path / CHECKPOINT_NAME).exists():  # a checkpoint file (a cooldown's fork), or the run's
        return load_checkpoint(path)
    if (path / STATE_NAME).exists():
        try:
            state = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path / STATE_NAME}: unreadable ({exc})") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path / STATE_NAME}: not lrwatch's state")
    else:
        state = recorded_state(path)
    parse_state(state)  # refused now, in one line, if malformed
    return {"format": CHECKPOINT_FORMAT, "lrwatch": state, "model": None, "optimizer": None, "rng": None, "extra": {}}
