"""Losses that live on a GPU reach the engine without a per-step device synchronisation.

``loss.item()`` on a CUDA tensor waits until the GPU has finished every kernel queued before it: the
CPU can no longer run ahead and queue the next step. :class:`DeviceLosses` instead keeps each
step's loss on the device and, once :data:`BATCH` of them are there or :data:`BATCH_SECONDS` have
passed since the last copy, copies them to pinned host memory with ``non_blocking=True`` behind a
CUDA event; the values are read once that event has completed (``event.query()``, which never
waits). So a loss reaches the history, the monitor and the divergence watch at most ``BATCH`` steps
or ``BATCH_SECONDS`` after its step, plus however far the GPU runs behind the CPU; a divergence is
acted on that much later (``tests/test_losses.py`` checks ≤ ``2 · BATCH`` steps with a GPU two
polls behind).
At a stop and at the end the rest is copied with one wait.

The copies go through a :class:`Copier` (the CUDA one, or a fake in tests), so everything here but
three torch calls runs, and is tested, without a GPU.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any, Protocol

BATCH = 32
BATCH_SECONDS = 0.1


class Copy(Protocol):
    """A copy to the host under way."""

    def done(self) -> bool: ...  # never waits

    def values(self) -> list[float]: ...  # waits if not done


class Copier(Protocol):
    def start(self, losses: list[Any]) -> Copy: ...


class CudaCopy:
    def __init__(self, losses: list[Any]) -> None:
        import torch

        stacked = torch.stack([loss.detach().reshape(()).float() for loss in losses])
        self.host = torch.empty(stacked.shape, dtype=stacked.dtype, device="cpu", pin_memory=True)
        self.host.copy_(stacked, non_blocking=True)
        self.event = torch.cuda.Event()
        self.event.record()

    def done(self) -> bool:
        return bool(self.event.query())

    def values(self) -> list[float]:
        self.event.synchronize()
        return self.host.tolist()


class CudaCopier:
    def start(self, losses: list[Any]) -> Copy:
        return CudaCopy(losses)


def on_device(loss: Any) -> bool:
    """A tensor whose ``item()`` would wait for an accelerator (CPU tensors and floats are read at once)."""
    device = getattr(loss, "device", None)
    return device is not None and getattr(device, "type", "cpu") == "cuda"


def host_value(value: Any) -> float:
    """A float, or a tensor already readable without waiting (a CPU one)."""
    return float(value.item()) if hasattr(value, "item") else float(value)


class DeviceLosses:
    """Per-step losses (and the step's metrics) still on their device, in step order; :meth:`ready` hands
    back the copied ones: a float per step, or ``(loss, {metric: value})`` for a step logged with metrics.
    A step's metric tensors on the device travel in the same copy as the losses."""

    def __init__(self, copier: Copier | None = None, *, batch: int = BATCH, batch_seconds: float = BATCH_SECONDS):
        self.copier = copier or CudaCopier()
        self.batch = batch
        self.batch_seconds = batch_seconds
        self.clock = time.monotonic
        self._waiting: list[Any] = []  # the tensors to copy: each step's loss, then its device metrics
        self._layout: list[tuple[tuple[str, ...], dict[str, float]] | None] = []  # per step: device names, host values
        self._last_copy = -math.inf
        self._copies: deque[tuple[Copy, list[Any]]] = deque()

    def push(self, loss: Any, metrics: dict[str, Any] | None = None) -> None:
        """This step's loss (and metrics); a copy starts when ``batch`` steps are waiting or ``batch_seconds``
        have passed since the last copy started (slow steps: every step is copied at once)."""
        self._waiting.append(loss.detach())
        if metrics:
            names: list[str] = []
            host: dict[str, float] = {}
            for name, value in metrics.items():
                if on_device(value):
                    names.append(name)
                    self._waiting.append(value.detach())
                else:
                    host[name] = host_value(value)
            self._layout.append((tuple(names), host))
        else:
            self._layout.append(None)
        if len(self._layout) >= self.batch or self.clock() - self._last_copy >= self.batch_seconds:
            self._start_copy()

    def _start_copy(self) -> None:
        if self._waiting:
            self._copies.append((self.copier.start(self._waiting), self._layout))
            self._waiting, self._layout = [], []
            self._last_copy = self.clock()

    @staticmethod
    def _assemble(values: list[float], layout: list[Any]) -> list[Any]:
        out: list[Any] = []
        i = 0
        for entry in layout:
            if entry is None:
                out.append(values[i])
                i += 1
                continue
            names, host = entry
            metrics = dict(zip(names, values[i + 1 : i + 1 + len(names)], strict=True))
            out.append((values[i], {**host, **metrics}))
            i += 1 + len(names)
        return out

    def ready(self) -> list[Any]:
        """The losses whose copy has completed, oldest first; never waits."""
        out: list[Any] = []
        while self._copies and self._copies[0][0].done():
            copy, layout = self._copies.popleft()
            out.extend(self._assemble(copy.values(), layout))
        return out

    def drain(self) -> list[Any]:
        """Every loss still pushed, waiting once for the device (a stop, the end of the run)."""
        self._start_copy()
        out: list[Any] = []
        while self._copies:
            copy, layout = self._copies.popleft()
            out.extend(self._assemble(copy.values(), layout))
        return out
