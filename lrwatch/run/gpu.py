"""The GPU a run trains on, for the run panel: sampled once a second, off the training thread.

From ``torch.cuda`` (the caching allocator's own counters: no device synchronisation): the device
name, memory allocated, reserved and the peak allocated. From NVML through ``nvidia-ml-py`` (the
optional extra ``lrwatch[gpu]``; without it, or without a driver, these are simply absent):
utilisation, memory used of total, temperature; under DDP also the lowest and highest of those
over the GPUs of this node's ranks (one NVML query per GPU: cheap). On a CPU run there is no probe
and the panel shows none of it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

SAMPLE_SECONDS = 1.0


class GpuProbe:
    """Samples ``device`` (a CUDA index) every :data:`SAMPLE_SECONDS` in a daemon thread; :meth:`latest`
    is the last sample, a JSON-able dict. ``cuda`` and ``nvml`` are ``torch.cuda`` and ``pynvml`` (fakes in tests)."""

    def __init__(
        self,
        device: int,
        *,
        local_devices: int = 1,
        cuda: Any = None,
        nvml: Any = None,
        interval: float = SAMPLE_SECONDS,
    ) -> None:
        if cuda is None:
            import torch

            cuda = torch.cuda
        self.device = device
        self.local_devices = max(1, local_devices)  # DDP: this node's ranks use devices 0 .. n-1
        self.cuda = cuda
        self.interval = interval
        self.samples = 0
        self._latest: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._nvml, self._handles = _open_nvml(nvml, cuda, device, self.local_devices)
        self._name = str(cuda.get_device_name(device))
        self._thread = threading.Thread(target=self._run, name="lrwatch-gpu", daemon=True)

    def start(self) -> GpuProbe:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()

    def latest(self) -> dict[str, Any] | None:
        return self._latest

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a driver hiccup leaves the last sample in place
                self._latest = self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> dict[str, Any]:
        self.samples += 1
        cuda, d = self.cuda, self.device
        out: dict[str, Any] = {
            "name": self._name,
            "allocated": int(cuda.memory_allocated(d)),
            "reserved": int(cuda.memory_reserved(d)),
            "peak": int(cuda.max_memory_allocated(d)),
            "time": time.time(),
        }
        if self._nvml is not None and self._handles:
            readings = [_nvml_reading(self._nvml, handle) for handle in self._handles]
            mine = readings[d] if len(readings) > 1 and d < len(readings) else readings[0]
            out.update(mine)
            if len(readings) > 1:
                out["ranks"] = {key: [min(r[key] for r in readings), max(r[key] for r in readings)] for key in mine}
        return out


def _open_nvml(nvml: Any, cuda: Any, device: int, count: int) -> tuple[Any, list[Any]]:
    """``(pynvml, handles of devices 0..count-1 as CUDA numbers them)``, or ``(None, [])`` without NVML."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None, []
    try:
        nvml.nvmlInit()
        indices = list(range(count)) if count > 1 else [device]
        return nvml, [_handle(nvml, cuda, index) for index in indices]
    except Exception:  # no driver, no device, an old NVML: the torch lines only
        return None, []


def _handle(nvml: Any, cuda: Any, index: int) -> Any:
    """NVML's handle of CUDA device ``index``: by UUID, as CUDA_VISIBLE_DEVICES renumbers devices."""
    uuid = getattr(cuda.get_device_properties(index), "uuid", None)
    return nvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}") if uuid else nvml.nvmlDeviceGetHandleByIndex(index)


def _nvml_reading(nvml: Any, handle: Any) -> dict[str, Any]:
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    return {
        "util": int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        "mem_used": int(memory.used),
        "mem_total": int(memory.total),
        "temp": int(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
    }


def gpu_lines(gpu: dict[str, Any] | None) -> list[str]:
    """The run panel's GPU lines (none for a CPU run)."""
    if not gpu:
        return []
    lines = [str(gpu.get("name", "GPU"))]
    lines.append(f"mem {_gib(gpu['allocated'])}/{_gib(gpu['reserved'])} GiB  peak {_gib(gpu['peak'])}")
    if "util" in gpu:
        lines.append(f"util {gpu['util']}%  {gpu['temp']}°C  {_gib(gpu['mem_used'])}/{_gib(gpu['mem_total'])} GiB")
    ranks = gpu.get("ranks")
    if ranks:
        (u0, u1), (t0, t1) = ranks["util"], ranks["temp"]
        lines.append(f"ranks util {u0}–{u1}%  {t0}–{t1}°C")
    return lines


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def probe_gpu(engine: Any, optimizer: Any, distributed: bool) -> str | None:
    """A run on CUDA shows its GPU in the run panel (:mod:`lrwatch.run.gpu`). A probe that fails is left
    out; the warning to log once the run has started is returned."""
    device = next((p.device for g in optimizer.param_groups for p in g.get("params", ())), None)
    if getattr(device, "type", "cpu") != "cuda":
        return None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if distributed else 1
    try:
        engine.gpu = GpuProbe(device.index or 0, local_devices=local).start()
    except Exception as exc:
        return f"no GPU readings in the run panel ({exc})"
    engine.add_listener(lambda event: engine.gpu.close() if event.kind == "finish" else None)
    return None
