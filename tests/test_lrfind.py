"""The LR range test: torch-lr-finder's algorithm and defaults, from a snapshot restored exactly."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lrwatch.cli.main import main
from lrwatch.demo_task import DemoConfig, DemoTask
from lrwatch.record.rundir import read_lr_find
from lrwatch.run.lrfind import RangeTest, lr_schedule, range_test, smooth_until_divergence
from tests.conftest import app_wait_for


def test_the_schedule_and_the_smoothing_are_the_lr_finders() -> None:
    lrs = lr_schedule(1e-7, 10.0, 100)
    assert lrs[0] == 1e-7 and math.isclose(lrs[-1], 10.0) and np.allclose(np.diff(np.log(lrs)), np.log(1e8) / 99)
    losses = [2.0, 1.0, 1.5, 40.0, 1.0]
    out = list(smooth_until_divergence(losses))
    expected, s = [], 2.0
    for i, loss in enumerate(losses):  # torch-lr-finder's range_test loop, written out
        s = loss if i == 0 else 0.05 * loss + 0.95 * s
        expected.append(s)
    assert [o[1] for o in out] == expected and not any(o[2] for o in out)  # 3.9 < 5 × 1.9
    stops = [o[2] for o in smooth_until_divergence([1.0, 1.0, 200.0, 1.0])]
    assert stops == [False, False, True, True]  # 10.9 > 5 × 1.0: the test stops at the third batch
    assert next(o for o in smooth_until_divergence([1.0, float("nan")]) if o[2])[1] != 1.0
    with pytest.raises(ValueError):
        lr_schedule(1.0, 0.1, 10)


def test_suggestions_steepest_and_min_over_10() -> None:
    lrs = lr_schedule(1e-4, 1.0, 41)
    x = np.log10(lrs)  # a valley: flat, a steep fall centred at 1e-2, a minimum at 10^-1.2, then a rise
    smoothed = 2 - np.tanh((x + 2) * 3) + np.where(x > -1.2, (x + 1.2) ** 2 * 20, 0)
    test = RangeTest(lrs, smoothed, smoothed, diverged=False)
    inner = slice(10, len(lrs) - 5)  # torch-lr-finder's skip_start=10, skip_end=5
    slope = np.gradient(smoothed[inner], np.log(lrs[inner]))
    assert math.isclose(test.steepest, lrs[inner][np.argmin(slope)])
    assert abs(math.log10(test.steepest) + 2) < 0.11
    assert math.isclose(test.min_over_10, lrs[np.argmin(smoothed)] / 10)
    diverged = RangeTest(lrs[:3], smoothed[:3], smoothed[:3], diverged=True)
    assert diverged.steepest is None  # two usable points: no slope to speak of


def small_task() -> DemoTask:
    return DemoTask(DemoConfig(train_size=2048, val_size=256, batch_size=64, hidden=32, device="cpu"))


def test_everything_is_restored_and_the_batches_are_the_loops() -> None:
    task = small_task()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    task.optimizer.param_groups[0]["lr"] = 0.0123
    torch.manual_seed(7)
    expected_draw = torch.rand(3)
    torch.manual_seed(7)
    test = range_test(task.model, task.optimizer, task.train_step, task.batches(0), num_iter=60)
    assert len(test.lrs) == len(test.losses) == len(test.smoothed) and len(test.lrs) <= 60
    assert all(torch.equal(before[k], v) for k, v in task.model.state_dict().items())
    assert task.optimizer.param_groups[0]["lr"] == 0.0123 and not task.optimizer.state  # momentum buffers too
    assert torch.equal(torch.rand(3), expected_draw)  # the RNG goes on as if the test had not run
    k = task.config.steps  # batches(s) continues the loop's order: epoch 1's permutation after epoch 0's
    later = list(itertools.islice(task.batches(k + 2), 2))
    all_of_epoch_1 = list(itertools.islice(task.batches(k), 4))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(later, all_of_epoch_1[2:], strict=True))
    assert not torch.equal(next(task.batches(0))[0], next(task.batches(k))[0])


def test_demo_find_lr_headless_writes_the_csv_and_prints_the_suggestions(tmp_path: Path, capsys) -> None:
    assert main(["demo", "--find-lr", "--headless", "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    rows = read_lr_find(tmp_path / "run")
    assert 2 < len(rows) <= 100 and rows[0][0] == 1e-7 and rows[0][1] == rows[0][2]
    lrs = np.array([r[0] for r in rows])
    assert np.all(np.diff(lrs) > 0)
    test = RangeTest(lrs, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]), len(rows) < 100)
    assert f"suggested lr {test.steepest:.3g} (steepest), {test.min_over_10:.3g} (min/10)" in out
    assert not (tmp_path / "run" / "metrics.csv").exists()  # nothing trained
    assert main(["demo", "--find-lr", "--run-dir", str(tmp_path / "x")]) == 2


def test_monitor_find_lr_mid_run_leaves_the_run_as_it_was(tmp_path: Path) -> None:
    import lrwatch

    task = small_task()
    monitor = lrwatch.watch(task.optimizer, model=task.model, steps_per_epoch=task.config.steps, epochs=2,
                            run_dir=tmp_path / "run", train_step=task.train_step, batches=task.batches)  # fmt: skip
    for batch in itertools.islice(task.batches(0), 10):
        monitor.step(task.train_step(batch))
    weights = {k: v.clone() for k, v in task.model.state_dict().items()}
    lr = task.optimizer.param_groups[0]["lr"]
    test = monitor.find_lr(num_iter=30)
    assert all(torch.equal(weights[k], v) for k, v in task.model.state_dict().items())
    assert task.optimizer.param_groups[0]["lr"] == lr and monitor.engine.step_index == 10
    assert len(read_lr_find(tmp_path / "run")) == len(test.lrs)
    event = monitor.engine.events_since(0)[-1]
    assert event.kind == "lr_find" and event.step == 10 and event.data["points"] == len(test.lrs)
    monitor.close()
    bare = lrwatch.watch(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), steps_per_epoch=1,
                         run_dir=tmp_path / "bare")  # fmt: skip
    with pytest.raises(ValueError, match="train_step=, batches=, model="):
        bare.find_lr()
    bare.close()


async def test_F_runs_the_test_in_the_live_run_and_enter_enter_starts_from_its_suggestion(
    tmp_path: Path,
) -> None:

    from lrwatch.app import LRWatchApp
    from lrwatch.app.screens import LrFindScreen
    from lrwatch.live.host import Host

    config = DemoConfig(train_size=2048, val_size=256, batch_size=64, hidden=32, device="cpu", epochs=400)
    task = DemoTask(config)
    app = LRWatchApp(None, task.train, host=Host(headless=False, run_dir=tmp_path / "run", log=None), fps=4)

    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: app.source is not None and app.source.status().step > 50, pilot, timeout=30.0)
        weights_seen = app.source.status().step
        await pilot.press("F")
        await app_wait_for(lambda: isinstance(app.screen, LrFindScreen), pilot, timeout=30.0)
        found = [e for e in app.source.events_since(0) if e.kind == "lr_find"][-1]
        assert found.step >= weights_seen and found.data["steepest"] > 0 and len(found.data["lrs"]) > 2
        assert "suggested lr" in str(app.screen.query_one("#lr-find-box Static:last-of-type").render())
        await pilot.press("enter")  # the suggestion becomes a candidate: drawn, nothing switched yet
        await app_wait_for(lambda: not isinstance(app.screen, LrFindScreen), pilot)
        assert app.candidates.kinds() == ["cosine"] and app.candidates.specs["cosine"].endswith(
            ":lr=" + f"{found.data['steepest']:.6g}"
        )
        assert not any(e.kind == "switch" for e in app.source.events_since(0))
        await pilot.press("enter")  # one more enter applies it, like every other change
        await app_wait_for(lambda: any(e.kind == "switch" for e in app.source.events_since(0)), pilot, timeout=30.0)
        switch = next(e for e in app.source.events_since(0) if e.kind == "switch")
        assert switch.step > found.step and switch.data["spec"].startswith("cosine")
        assert switch.data["base_lr"] == float(f"{found.data['steepest']:.6g}")
        assert (tmp_path / "run" / "lr_find.csv").exists()
        await pilot.press("q")
        await app_wait_for(lambda: app.return_code is not None, pilot, timeout=20)


def test_send_find_lr_to_a_detached_demo_and_refusals(tmp_path: Path) -> None:
    import json
    import os
    import signal

    from tests.test_live import detached_demo, lrwatch, run_pid, wait_for

    run_dir = tmp_path / "run"
    detached_demo(run_dir)
    try:
        sent = lrwatch("send", str(run_dir), "find-lr", timeout=120)
        assert sent.returncode == 0, sent.stderr
        event = json.loads(sent.stdout)
        assert event["event"] == "lr_find" and event["steepest"] > 0
        assert len(read_lr_find(run_dir)) == event["points"]
        assert lrwatch("send", str(run_dir), "find-lr", "now").returncode == 2  # no arguments
    finally:
        os.kill(run_pid(run_dir), signal.SIGTERM)
        wait_for(lambda: not (run_dir / "live.json").exists(), "the run to end", 15)


def test_the_steepest_suggestion_is_torch_lr_finders(capsys) -> None:
    """The peer: torch-lr-finder and lrwatch on the same model, initial weights and batches suggest the same LR,
    within one step of the LR grid (torch-lr-finder records each batch's LR one step ahead)."""
    torch_lr_finder = pytest.importorskip("torch_lr_finder")  # a test extra: make test installs it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def setup() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.utils.data.DataLoader]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
        g = torch.Generator().manual_seed(1)
        x = torch.randn(100 * 16, 2, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
        return model, torch.optim.SGD(model.parameters(), lr=1e-7, momentum=0.9), loader

    model, optimizer, loader = setup()
    finder = torch_lr_finder.LRFinder(model, optimizer, torch.nn.CrossEntropyLoss(), device="cpu")
    finder.range_test(loader, start_lr=1e-7, end_lr=10, num_iter=100, step_mode="exp")
    _, fig_ax = plt.subplots()
    _, theirs = finder.plot(skip_start=10, skip_end=5, suggest_lr=True, ax=fig_ax)
    plt.close("all")

    model, optimizer, loader = setup()

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss

    ours = range_test(model, optimizer, train_step, iter(loader))
    grid_step = math.log(1e8) / 99
    assert len(ours.lrs) == len(finder.history["lr"])  # the same batches, stopped at the same one
    assert np.allclose(ours.smoothed, finder.history["loss"], rtol=1e-6)  # the same smoothed losses
    assert abs(math.log(ours.steepest) - math.log(theirs)) <= grid_step * 1.0001, (ours.steepest, theirs)
    capsys.readouterr()
