"""No per-step device synchronisation: GPU losses are copied in batches, read when their copy is done.

Without a GPU, a fake tensor type counts every call that would wait for the device (``item()``,
``float()``, ``tolist()``), and a fake copier completes its copies a few polls after they start.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lrwatch.api import watch
from lrwatch.live.host import Host, using_host
from lrwatch.record.rundir import read_metric_rows
from lrwatch.run.losses import BATCH, DeviceLosses, on_device
from tests.conftest import FakeOptimizer

COPY_POLLS = 2  # a copy completes on the second poll after it started: the GPU a little behind


class FakeGpuLoss:
    """A 0-d CUDA tensor as far as lrwatch can tell; every synchronising call is counted."""

    syncs = 0

    def __init__(self, value: float) -> None:
        self.value = value
        self.device = SimpleNamespace(type="cuda")

    def detach(self) -> FakeGpuLoss:
        return self

    def item(self) -> float:
        FakeGpuLoss.syncs += 1
        return self.value

    __float__ = item

    def tolist(self) -> float:
        return self.item()


class FakeCopy:
    def __init__(self, losses: list[FakeGpuLoss], copier: FakeCopier) -> None:
        self.losses, self.copier, self.polls = losses, copier, 0

    def done(self) -> bool:
        self.polls += 1
        return self.polls >= COPY_POLLS

    def values(self) -> list[float]:
        if self.polls < COPY_POLLS:
            self.copier.waits += 1  # read before the event completed: this waits for the device
        return [loss.value for loss in self.losses]  # what the pinned host buffer holds by then


class FakeCopier:
    def __init__(self) -> None:
        self.started: list[int] = []
        self.waits = 0

    def start(self, losses: list[FakeGpuLoss]) -> FakeCopy:
        self.started.append(len(losses))
        return FakeCopy(losses, self)


@pytest.fixture
def monitor(tmp_path):
    def make(on_divergence: str = "stop"):
        with using_host(Host(log=None, serve=False)):
            monitor = watch(
                FakeOptimizer(0.1), steps_per_epoch=50, epochs=20, run_dir=tmp_path, on_divergence=on_divergence
            )
        copier = FakeCopier()
        monitor._device_losses = DeviceLosses(copier)
        return monitor, copier

    FakeGpuLoss.syncs = 0
    return make


def test_gpu_losses_are_logged_without_one_synchronising_call(monitor, tmp_path) -> None:
    monitor, copier = monitor()
    losses = [1.0 / (1 + i) for i in range(300)]
    for loss in losses:
        assert monitor.step(FakeGpuLoss(loss))
    assert FakeGpuLoss.syncs == 0 and copier.waits == 0
    assert max(copier.started) == BATCH and len(copier.started) <= 300 // BATCH + 2  # batches, not single steps
    assert len(monitor.engine.history) >= 300 - BATCH - COPY_POLLS * BATCH  # most already arrived, unwaited
    monitor.close()
    assert copier.waits <= 1  # the end: the rest copied with one wait
    rows = [row for row in read_metric_rows(tmp_path / "metrics.csv") if len(row) == 4]
    assert [r[0] for r in rows] == list(range(300)) and [r[3] for r in rows] == losses
    assert FakeGpuLoss.syncs == 0


def test_a_nan_still_on_the_gpu_stops_the_run_within_a_batch_and_the_copy(monitor) -> None:
    monitor, _ = monitor("stop")
    nan_at = 70
    steps = 0
    while monitor.step(FakeGpuLoss(math.nan if steps == nan_at else 1.0)):
        steps += 1
        assert steps < 500
    late = monitor.engine.step_index - (nan_at + 1)
    assert 0 <= late <= BATCH * COPY_POLLS  # the documented delay: a batch, and the copy's completion
    assert f"divergence at step {nan_at}" in monitor.engine.stop_reason
    monitor.close()
    assert len(monitor.engine.history) == monitor.engine.step_index  # every step's loss logged at the stop


def test_slow_steps_are_copied_each_without_waiting_for_a_full_batch() -> None:
    copier = FakeCopier()
    losses = DeviceLosses(copier, batch=32, batch_seconds=0.1)
    now = [0.0]
    losses.clock = lambda: now[0]
    for i in range(5):
        losses.push(FakeGpuLoss(float(i)))
        now[0] += 0.5  # two steps a second: a copy per step, not one every 16 s
    assert copier.started == [1, 1, 1, 1, 1]
    arrived = [value for _ in range(2 * COPY_POLLS * 5) for value in losses.ready()]
    assert arrived == [0.0, 1.0, 2.0, 3.0, 4.0] and copier.waits == 0


def test_cpu_tensors_and_floats_are_read_at_once() -> None:
    assert not on_device(1.0) and not on_device(torch.tensor(1.0)) and on_device(FakeGpuLoss(1.0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the fakes above cover the logic)")
def test_on_a_real_gpu_monitor_step_never_synchronises(tmp_path) -> None:
    model = torch.nn.Linear(8, 1).cuda()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with using_host(Host(log=None, serve=False)):
        monitor = watch(optimizer, steps_per_epoch=100, epochs=1, run_dir=tmp_path)
    x = torch.randn(64, 8, device="cuda")
    for _ in range(100):
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        torch.cuda.set_sync_debug_mode("error")  # any synchronising call in monitor.step raises
        try:
            monitor.step(loss)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    monitor.close()
    assert len(monitor.engine.history) == 100
