"""The run's throughput and the machine, sampled about once a second as step-level metrics of the history.

``steps_per_s`` is always there: ``Δsteps / Δt`` between two samples. ``tokens_per_s`` comes with
``watch(tokens_per_step=N)`` (``steps_per_s × N``) or a ``tokens=`` metric given to ``monitor.step``
(``Σ tokens / Δt``). ``cpu_percent`` is the process's CPU time over wall time (100 = one core busy),
``rss_mb`` its resident memory (2**20 bytes), and on CUDA ``gpu_util`` (%) and ``gpu_mem_gb`` (reserved)
from the GPU probe's last reading. They live in the history (charts, the wire), not in ``metrics.csv``.
"""

from __future__ import annotations

import os
import time
from typing import Any

SAMPLE_SECONDS = 1.0
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 0.0


def rss_mb() -> float | None:
    """The process's resident memory in MB (Linux's ``/proc/self/statm``; ``None`` elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE_MB
    except (OSError, ValueError, IndexError):
        return None


class SystemSampler:
    """Readings between two samples; :meth:`sample` gives the metrics of the interval just ended."""

    def __init__(self, tokens_per_step: float | None = None) -> None:
        self.tokens_per_step = tokens_per_step
        self.next_at = time.monotonic() + SAMPLE_SECONDS
        self._last = (time.monotonic(), time.process_time(), -1)
        self.tokens = 0.0  # Σ of the tokens= metric since the last sample
        self.counted_tokens = False

    def sample(self, step: int, now: float, gpu: dict[str, Any] | None = None) -> dict[str, float]:
        then, cpu_then, step_then = self._last
        cpu = time.process_time()
        self._last = (now, cpu, step)
        self.next_at = now + SAMPLE_SECONDS
        dt = now - then
        if step_then < 0 or dt <= 0:
            self.tokens = 0.0
            return {}
        out = {"steps_per_s": (step - step_then) / dt, "cpu_percent": 100.0 * (cpu - cpu_then) / dt}
        if self.counted_tokens:
            out["tokens_per_s"] = self.tokens / dt
        elif self.tokens_per_step:
            out["tokens_per_s"] = out["steps_per_s"] * self.tokens_per_step
        self.tokens = 0.0
        memory = rss_mb()
        if memory is not None:
            out["rss_mb"] = memory
        if gpu:
            if "util" in gpu:
                out["gpu_util"] = float(gpu["util"])
            if "reserved" in gpu:
                out["gpu_mem_gb"] = gpu["reserved"] / 2**30
        return out
