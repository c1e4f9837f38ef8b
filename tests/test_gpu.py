"""The GPU in the run panel, with a fake ``torch.cuda`` and a fake NVML (no GPU here)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from lrwatch.app import LRWatchApp
from lrwatch.run.engine import Engine
from lrwatch.run.gpu import GpuProbe, gpu_lines
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer, app_wait_for
from tests.test_app import slow_train

GIB = 2**30


class FakeCuda:
    """``torch.cuda`` as the probe reads it; records which thread asked."""

    def __init__(self) -> None:
        self.threads: set[str] = set()

    def _seen(self) -> None:
        self.threads.add(threading.current_thread().name)

    def get_device_name(self, d: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def get_device_properties(self, d: int) -> SimpleNamespace:
        return SimpleNamespace(uuid=f"uuid-{d}")

    def memory_allocated(self, d: int) -> int:
        self._seen()
        return 3 * GIB

    def memory_reserved(self, d: int) -> int:
        return 4 * GIB

    def max_memory_allocated(self, d: int) -> int:
        return int(3.5 * GIB)


class FakeNvml:
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.by_uuid: list[str] = []

    def nvmlInit(self) -> None:
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        self.by_uuid.append(uuid)
        return int(uuid.rsplit("-", 1)[1])

    def nvmlDeviceGetUtilizationRates(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(gpu=90 + h)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> SimpleNamespace:
        return SimpleNamespace(used=(10 + h) * GIB, total=80 * GIB)

    def nvmlDeviceGetTemperature(self, h: int, _kind: int) -> int:
        return 60 + 3 * h


def test_one_gpu_sample_from_torch_and_nvml() -> None:
    nvml = FakeNvml()
    sample = GpuProbe(0, cuda=FakeCuda(), nvml=nvml).sample()
    assert nvml.by_uuid == ["GPU-uuid-0"]  # the device CUDA means, whatever CUDA_VISIBLE_DEVICES says
    assert sample["util"] == 90 and sample["temp"] == 60 and "ranks" not in sample
    assert gpu_lines(sample) == [
        "NVIDIA H100 80GB HBM3",
        "mem 3.0/4.0 GiB  peak 3.5",
        "util 90%  60°C  10.0/80.0 GiB",
    ]


def test_under_ddp_the_lowest_and_highest_over_the_nodes_gpus() -> None:
    sample = GpuProbe(0, local_devices=4, cuda=FakeCuda(), nvml=FakeNvml()).sample()
    assert sample["util"] == 90 and sample["ranks"]["util"] == [90, 93] and sample["ranks"]["temp"] == [60, 69]
    assert gpu_lines(sample)[-1] == "ranks util 90–93%  60–69°C"


def test_without_nvml_only_the_torch_lines() -> None:
    sample = GpuProbe(0, cuda=FakeCuda(), nvml=FakeNvml(fail=True)).sample()
    assert "util" not in sample and gpu_lines(sample) == ["NVIDIA H100 80GB HBM3", "mem 3.0/4.0 GiB  peak 3.5"]
    assert gpu_lines(None) == []  # a CPU run: no lines at all


def test_the_real_nvml_without_a_driver_leaves_the_torch_lines() -> None:
    import pynvml  # the lrwatch[gpu] extra, which make test installs

    assert pynvml is not None
    sample = GpuProbe(0, cuda=FakeCuda()).sample()  # this machine has no NVIDIA driver
    assert "util" not in sample and sample["allocated"] == 3 * GIB


def test_samples_are_taken_in_the_probes_thread_once_per_interval() -> None:
    cuda = FakeCuda()
    probe = GpuProbe(0, cuda=cuda, nvml=FakeNvml(), interval=0.1).start()
    time.sleep(0.55)
    probe.close()
    assert cuda.threads == {"lrwatch-gpu"}  # never the training thread
    assert 4 <= probe.samples <= 7  # about one per interval, not one per step
    assert probe.latest()["name"] == "NVIDIA H100 80GB HBM3"


async def test_the_run_panel_shows_the_gpu() -> None:
    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=10, total_steps=4000)
    engine = Engine(FakeOptimizer(0.1), timeline)
    engine.gpu = GpuProbe(0, local_devices=2, cuda=FakeCuda(), nvml=FakeNvml(), interval=0.05).start()
    app = LRWatchApp(engine, slow_train, device="cuda:0", fps=4)
    async with app.run_test(size=(100, 30)) as pilot:
        panel = app.screen.query_one("#status")
        await app_wait_for(lambda: "util 90%" in str(panel.render()), pilot)
        text = str(panel.render())
        assert "NVIDIA H100" in text and "mem 3.0/4.0 GiB" in text and "ranks util 90–91%" in text
        await pilot.press("q")
    engine.gpu.close()
