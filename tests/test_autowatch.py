"""``lrwatch run`` on plain PyTorch scripts that never call ``lrwatch.watch()``: zero added lines."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import numpy as np

from lrwatch.record.reader import RunReader
from lrwatch.record.rundir import read_metric_rows, read_run_info
from lrwatch.schedule.timeline import Timeline
from tests.test_live import CLI, ENV, events, lrwatch, wait_for

PLAIN = """
import json, sys, time, torch
torch.manual_seed(0)
x = torch.randn(64, 4); y = x.sum(1, keepdim=True)
loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
seen = {"lrs": [], "losses": []}
# the LR each step really used: a hook of the optimizer's own runs after lrwatch's global one
optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen["lrs"].append(opt.param_groups[0]["lr"]))
try:
    for epoch in range(int(sys.argv[1])):
        for xb, yb in loader:
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            seen["losses"].append(loss.item())
            optimizer.step()
            time.sleep(float(sys.argv[2]))
        scheduler.step()
finally:
    json.dump(seen, open(sys.argv[3], "w"))
"""


def run_script(tmp_path: Path, *args: str, epochs: int = 3, pause: float = 0.0) -> subprocess.Popen:
    script = tmp_path / "train.py"
    script.write_text(PLAIN, encoding="utf-8")
    argv = [*CLI, "run", "--headless", "--run-dir", str(tmp_path / "run"), *args, str(script), "--"]
    argv += [str(epochs), str(pause), str(tmp_path / "seen.json")]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def rows(run_dir: Path) -> list[tuple]:
    return [r for r in read_metric_rows(run_dir / "metrics.csv") if len(r) == 4]


def test_a_plain_script_is_watched_step_by_step(tmp_path: Path) -> None:
    done = run_script(tmp_path)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    seen = json.loads((tmp_path / "seen.json").read_text())
    steps = rows(tmp_path / "run")
    assert [r[0] for r in steps] == list(range(24))
    assert [r[1] for r in steps] == [s / 8 for s in range(24)]  # 8 batches an epoch, from len(loader)
    assert np.allclose([r[2] for r in steps], seen["lrs"], rtol=0, atol=1e-15)  # the LR each step used
    assert np.allclose([r[3] for r in steps], seen["losses"], rtol=1e-6)  # the loss backward() was called on
    assert read_run_info(tmp_path / "run")["config"]["hooked"] is True
    kinds = [e["event"] for e in events(tmp_path / "run")]
    assert kinds[0] == "start" and kinds[-1] == "finish" and "warning" not in kinds
    assert "start at step 0" in err


def test_a_switch_takes_the_lr_over_and_stop_ends_the_script(tmp_path: Path) -> None:
    child = run_script(tmp_path, epochs=400, pause=0.01)  # long enough that the stop finds it running
    run_dir = tmp_path / "run"
    try:
        wait_for(lambda: (run_dir / "live.json").exists() and len(rows(run_dir)) > 20, "the script to step")
        refused = lrwatch("send", str(run_dir), "edit", "T_max=3")  # StepLR is step:step_size=1,gamma=0.9: no T_max
        assert refused.returncode == 1 and "unknown key 'T_max'" in json.loads(refused.stdout)["reason"]
        switched = lrwatch("send", str(run_dir), "switch", "exp:gamma=0.5")
        assert switched.returncode == 0, switched.stderr
        at = json.loads(switched.stdout)["step"]
        wait_for(lambda: len(rows(run_dir)) > at + 30, "steps after the switch")
        stopped = lrwatch("send", str(run_dir), "stop")
        assert stopped.returncode == 0
        _, err = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, err  # the stop ended the script cleanly: RunStopped out of optimizer.step()
    seen = json.loads((tmp_path / "seen.json").read_text())  # its finally block ran
    steps = rows(run_dir)
    lrs = np.array([r[2] for r in steps])
    assert np.allclose(lrs, seen["lrs"][: len(lrs)], rtol=0, atol=1e-15)
    before = 0.1 * 0.9 ** ((at - 1) // 8)  # the LR step at − 1 used: a switch continues from the LR in force
    expected = Timeline.start("exp:gamma=0.5", lr=before, steps_per_epoch=8).lrs(np.arange(len(lrs) - at))
    assert np.allclose(lrs[at:], expected, rtol=1e-12)  # lrwatch's schedule, though StepLR still steps
    replayed = RunReader(run_dir).timeline  # lrwatch view rebuilds the same LRs from events.jsonl
    assert np.allclose(replayed.lrs(np.arange(at, len(lrs))), lrs[at:], rtol=1e-12)
    evs = events(run_dir)
    assert any(e["event"] == "warning" and "took over" in e["message"] for e in evs)
    assert [e["event"] for e in evs][-1] == "finish" and evs[-1]["status"] == "stopped"


def test_no_optimizer_says_so_and_a_script_with_watch_is_not_hooked_twice(tmp_path: Path) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("print('hello')\n", encoding="utf-8")
    out = lrwatch("run", "--headless", "--run-dir", str(tmp_path / "none"), str(empty))
    assert out.returncode == 0 and "hello" in out.stdout
    assert "never called optimizer.step()" in out.stderr and out.stderr.count("\n") == 1
    tutorial = Path(__file__).resolve().parents[1] / "demo" / "torch_tutorial.py"
    started = time.monotonic()
    out = lrwatch("run", "--headless", "--run-dir", str(tmp_path / "own"), str(tutorial), timeout=120)
    assert out.returncode == 0, out.stderr
    assert [e["event"] for e in events(tmp_path / "own")].count("start") == 1
    assert "hooked" not in read_run_info(tmp_path / "own")["config"]
    assert time.monotonic() - started < 120


NO_LOADER = """
import torch
torch.manual_seed(0)  # max_lr 0.5 diverged in about 3 runs of 10 (unseeded), and lrwatch stopped the run
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=30)
for step in range(30):
    x = torch.randn(8, 4)
    loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
    optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()
"""


def test_no_dataloader_leaves_the_epoch_column_empty_and_onecycle_gives_the_length(tmp_path: Path) -> None:
    script = tmp_path / "loop.py"
    script.write_text(NO_LOADER, encoding="utf-8")
    out = lrwatch("run", "--headless", "--run-dir", str(tmp_path / "run"), str(script))
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(lines) == 31 and all(line.split(",")[1] == "" for line in lines[1:])  # step,,lr,loss
    assert RunReader(tmp_path / "run").timeline.total_steps == 30  # OneCycleLR's total_steps
    from lrwatch.record.reader import FileRunSource

    status = FileRunSource(RunReader(tmp_path / "run")).status()
    assert not status.epochs_known and status.total_steps == 30
    assert any("steps per epoch unknown" in e.get("message", "") for e in events(tmp_path / "run"))
    rows_read = rows(tmp_path / "run")
    assert [r[0] for r in rows_read] == list(range(30)) and all(np.isnan(r[1]) for r in rows_read)
