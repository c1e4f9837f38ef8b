"""The public API on real PyTorch loops: lrwatch.watch, lrwatch run, monitor-only, checkpoints and resume."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import lrwatch
from lrwatch.demo_task import DemoConfig, DemoTask
from lrwatch.live.host import Host, run_loop, using_host
from lrwatch.protocol.commands import Stop, Switch
from lrwatch.run.checkpoints import CheckpointError, load_checkpoint
from tests.test_app import quit_app

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"epochs": 4, "steps_per_epoch": 10, "train_size": 2000, "val_size": 400, "hidden": 32}


def step_rows(run_dir: Path) -> list[tuple[str, str, str]]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [(r["step"], r["lr"], r["loss"]) for r in rows if r["loss"]]


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").open()]


def run_demo(run_dir: Path, resume: Path | None = None, on_engine=None, **overrides) -> Host:
    config = {**SMALL, "switches": ("1.5:exp:gamma=0.5", "3:step:step_size=1,gamma=0.5"), **overrides}
    if resume is not None:
        config = DemoConfig.from_run_dir(resume).as_fields() | {"schedule": overrides.get("schedule"), "switches": ()}
    host = Host(run_dir=run_dir, resume=resume, log=None, on_engine=on_engine)
    run_loop(host, DemoTask(DemoConfig(**config, device="cpu")).train)
    return host


def test_resume_continues_exactly_where_the_run_stopped(tmp_path: Path) -> None:
    run_demo(tmp_path / "whole")
    stopped = tmp_path / "stopped"
    run_demo(stopped, on_engine=lambda engine: engine.schedule_command(23, Stop("test")))
    assert [e["event"] for e in events(stopped)][-3:] == ["stop", "checkpoint", "finish"]
    assert load_checkpoint(stopped)["lrwatch"]["step"] == 23
    host = run_demo(stopped, resume=stopped)
    assert host.engine.state == "finished"
    whole, resumed = step_rows(tmp_path / "whole"), step_rows(stopped)
    assert [r[1] for r in resumed] == [r[1] for r in whole]  # the LR sequence
    assert resumed == whole  # and, with model, optimizer, RNG and data order restored, the losses too
    kinds = [e["event"] for e in events(stopped)]
    assert kinds.count("resumed") == 1 and kinds.count("switch") == 2 and kinds[-1] == "finish"
    # The resumed run's history (what its plots draw) holds the rows logged before the stop too.
    history = host.engine.history
    assert history.column("step").tolist() == [int(r[0]) for r in whole]
    assert history.column("loss").tolist() == [float(r[2]) for r in whole]
    epoch_rows = [r for r in csv.DictReader((tmp_path / "whole" / "metrics.csv").open()) if not r["loss"]]
    val_steps, _, val = history.validation()
    assert val_steps.tolist() == [int(r["step"]) for r in epoch_rows]
    assert val["val_loss"].tolist() == [float(r["val_loss"]) for r in epoch_rows]


def test_a_schedule_given_at_resume_is_a_visible_switch(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_demo(run_dir, on_engine=lambda engine: engine.schedule_command(12, Stop("test")))
    run_demo(run_dir, resume=run_dir, schedule="cosine:T_max=2")
    switches = [e for e in events(run_dir) if e["event"] == "switch"]
    assert (switches[0]["step"], switches[0]["spec"]) == (12, "cosine:T_max=2")
    assert [s["step"] for s in switches] == [12, 15, 30]  # the planned switches still land


def test_checkpoint_key_and_every(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_demo(run_dir, checkpoint_every=2, on_engine=lambda engine: engine.schedule_command(5, lrwatch_checkpoint()))
    saved = [(e["step"], e["reason"]) for e in events(run_dir) if e["event"] == "checkpoint"]
    assert saved == [(5, "request"), (20, "every"), (40, "every")]


def lrwatch_checkpoint():
    from lrwatch.protocol.commands import Checkpoint

    return Checkpoint()


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoints_load_only_with_weights_only(tmp_path: Path) -> None:
    torch.save({"format": 1, "evil": Evil()}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="refused, it does not load with weights_only=True"):
        load_checkpoint(tmp_path)
    torch.save({"format": 99}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not an lrwatch checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match=r"no checkpoint\.pt"):
        load_checkpoint(tmp_path / "nowhere")


def tiny_loop(monitor_kwargs: dict, tmp_path: Path, scheduler_factory=None, steps: int = 60):
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = scheduler_factory(optimizer) if scheduler_factory else None
    used = []
    with using_host(Host(run_dir=tmp_path, log=None)):
        monitor = lrwatch.watch(optimizer, steps_per_epoch=10, epochs=steps // 10, **monitor_kwargs)
        monitor.engine.submit(Switch("exp"))
        for _ in range(steps):
            used.append(optimizer.param_groups[0]["lr"])
            loss = model(torch.randn(8, 4)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            monitor.step(loss)
        monitor.close()
    return monitor, used


def test_monitor_only_plots_the_loops_own_scheduler(tmp_path: Path) -> None:
    monitor, used = tiny_loop(
        {"drive_lr": False}, tmp_path, lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=60)
    )
    assert monitor.engine.history.column("lr").tolist() == used
    rejected = [e for e in events(tmp_path) if e["event"] == "rejected"]
    assert "monitor-only" in rejected[0]["reason"]
    assert not [e for e in events(tmp_path) if e["event"] == "switch"]


def test_a_scheduler_fighting_lrwatch_is_reported(tmp_path: Path) -> None:
    tiny_loop({"schedule": "cosine"}, tmp_path, lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=5))
    warnings = [e for e in events(tmp_path) if e["event"] == "warning"]
    assert len(warnings) == 1 and "changed outside lrwatch" in warnings[0]["message"]


def test_driven_lrs_are_what_the_optimizer_used(tmp_path: Path) -> None:
    monitor, used = tiny_loop({"schedule": "step:step_size=1,gamma=0.5"}, tmp_path)
    assert monitor.engine.history.column("lr").tolist() == used
    assert np.array_equal(np.array(used), monitor.engine.timeline.lrs(np.arange(60)))


def test_tutorial_port_prints_what_plain_pytorch_prints(tmp_path: Path) -> None:
    script = str(ROOT / "demo" / "torch_tutorial.py")
    plain = subprocess.run([sys.executable, script, "--plain"], capture_output=True, text=True, check=True)
    ported = subprocess.run(
        [sys.executable, "-m", "lrwatch.cli", "run", "--headless", "--run-dir", str(tmp_path), script],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert plain.stdout.splitlines()[0] == "Epoch 1, Current LR: 0.099610"
    assert len(plain.stdout.splitlines()) == 50
    assert ported.stdout == plain.stdout
    assert "finished at step 200" in ported.stderr


def test_cnn_example_runs(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "cnn.py"), "--epochs", "1", "--train-size", "640", "--device", "cpu"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("epoch 1: val_loss")
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert events(run_dir)[-1]["status"] == "finished"


def test_run_passes_script_arguments_and_exit_status(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import sys, torch, lrwatch\n"
        "print(sys.argv[1:])\n"
        "opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)\n"
        "m = lrwatch.watch(opt, steps_per_epoch=2, epochs=1)\n"
        "m.step(1.0)\n"
        "raise ValueError('boom')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "lrwatch.cli", "run", "--headless", "--run-dir", str(tmp_path / "r"), str(script),
         "--", "--lr", "3"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.stdout.strip() == "['--lr', '3']"
    assert proc.returncode == 1 and "ValueError: boom" in proc.stderr
    assert [e["event"] for e in events(tmp_path / "r")][-2:] == ["error", "finish"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "nowhere.py"], "lrwatch run: no such script: nowhere.py"),
        (["demo", "--resume", "nowhere"], "nowhere: no such directory"),
    ],
)
def test_bad_run_arguments(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from lrwatch.cli.main import main

    assert main(argv) == 2
    assert message in capsys.readouterr().err


async def test_lrwatch_run_with_the_monitor(tmp_path: Path) -> None:
    import runpy

    from lrwatch.app import LRWatchApp

    script = str(ROOT / "demo" / "torch_tutorial.py")

    def target() -> None:
        sys.argv = [script]
        runpy.run_path(script, run_name="__main__")

    host = Host(headless=False, run_dir=tmp_path, log=None)
    app = LRWatchApp(None, target, host=host, fps=4)
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + 30
        while app.source is None or app.source.status().state != "finished":
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        await pilot.pause(0.3)
        assert "finished" in str(app.screen.query_one("#status").render())
        schedule = " ".join(str(app.screen.query_one("#schedule").render()).split())  # lines break between params
        assert "CosineAnnealingLR(optimizer, T_max=25, eta_min=0.001)" in schedule
        assert "its cycle ends at epoch 25: the LR then rises again" in schedule  # T_max=25 of a 50-epoch run
        await quit_app(app, pilot)
    assert app.return_code == 0


def test_resume_from_the_cli_after_a_sigterm(tmp_path: Path) -> None:
    import signal

    run_dir = tmp_path / "run"
    demo = [sys.executable, "-m", "lrwatch.cli", "demo", "--headless", "--epochs", "60", "--steps-per-epoch", "20"]
    proc = subprocess.Popen([*demo, "--run-dir", str(run_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not (run_dir / "metrics.csv").exists() or len((run_dir / "metrics.csv").read_text().splitlines()) < 30:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    stopped_at = load_checkpoint(run_dir)["lrwatch"]["step"]
    resumed = subprocess.run(
        [sys.executable, "-m", "lrwatch.cli", "demo", "--headless", "--resume", str(run_dir),
         "--switch", "3:exp:gamma=0.5"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"  resumed at step {stopped_at}" in resumed.stdout
    steps = [int(r[0]) for r in step_rows(run_dir)]
    assert steps == list(range(60 * 20))
    kinds = [e["event"] for e in events(run_dir) if e["event"] != "epoch"]
    assert kinds[:5] == ["start", "stop", "checkpoint", "finish", "resumed"] and kinds[-1] == "finish"
    switch = next(e for e in events(run_dir) if e["event"] == "switch")
    assert (switch["step"], switch["spec"]) == (max(60, stopped_at), "exp:gamma=0.5")


def test_monitor_state_dict_in_the_users_own_checkpoint_continues_the_schedule_exactly(tmp_path: Path) -> None:
    """lrwatch's state saved beside the model in a user's own torch.save, loaded with weights_only=True
    into a fresh watch(): the LRs go on as the uninterrupted run's, switches done and planned included."""
    import torch

    def make(run_dir: Path) -> tuple[Any, Any]:
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        monitor = lrwatch.watch(opt, epochs=6, steps_per_epoch=10, schedule="cosine", run_dir=run_dir,
                                switches=["2:exp:gamma=0.7", "4:step:step_size=1,gamma=0.5"])  # fmt: skip
        return monitor, opt

    def steps(monitor: Any, opt: Any, n: int) -> list[float]:
        lrs = []
        for _ in range(n):
            lrs.append(opt.param_groups[0]["lr"])
            monitor.step(1.0)
        return lrs

    with using_host(Host(log=None, serve=False)):
        whole, opt = make(tmp_path / "whole")
        expected = steps(whole, opt, 60)
        whole.close()
        first, opt = make(tmp_path / "first")
        done = steps(first, opt, 27)
        torch.save({"model": {}, "lrwatch": first.state_dict()}, tmp_path / "mine.pt")
        first.close()
        saved = torch.load(tmp_path / "mine.pt", weights_only=True)
        second, opt = make(tmp_path / "second")
        second.load_state_dict(saved["lrwatch"])
        assert (second.start_epoch, second.step_in_epoch) == (2, 7)
        rest = steps(second, opt, 33)
        second.close()
        with pytest.raises(RuntimeError):
            second.load_state_dict(saved["lrwatch"])  # after steps: refused, like nothing happened
    assert done + rest == expected
    assert [e["event"] for e in map(json.loads, (tmp_path / "second" / "events.jsonl").open())][:2] == [
        "start",
        "resumed",
    ]


def test_a_plain_script_that_raises_records_the_error_not_a_finish(tmp_path: Path) -> None:
    """``python train.py`` with no lrwatch run around it: the uncaught exception is the run's error."""
    script = tmp_path / "train.py"
    script.write_text(
        "import torch, lrwatch\n"
        "opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)\n"
        f"monitor = lrwatch.watch(opt, steps_per_epoch=5, epochs=2, run_dir={str(tmp_path / 'run')!r})\n"
        "for i in range(3):\n"
        "    monitor.step(1.0)\n"
        "raise ValueError('boom in the loop')\n"
    )
    env = {**os.environ, "LRWATCH_NO_SOCKET": "1"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 1 and "ValueError: boom in the loop" in out.stderr  # Python's own traceback too
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["event"] for line in lines]
    assert kinds[-2:] == ["error", "finish"] and json.loads(lines[-1])["status"] == "error"
