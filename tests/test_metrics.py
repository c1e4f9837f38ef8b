"""Any metric, from any entry point: stored in metrics.csv by name, exported as one TensorBoard tag each."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")  # make test installs the extra

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lrwatch.live.host import Host, using_host
from lrwatch.record.reader import RunReader
from lrwatch.record.rundir import RunWriter
from lrwatch.run.losses import DeviceLosses
from tests.test_losses import FakeCopier, FakeGpuLoss

ROOT = Path(__file__).resolve().parents[1]

OWN_LOOP = """
import json, sys, torch, lrwatch
torch.manual_seed(0)
model = torch.nn.Linear(4, 3)
opt = torch.optim.SGD(model.parameters(), lr=0.5)
x, y = torch.randn(64, 4), torch.randint(0, 3, (64,))
monitor = lrwatch.watch(opt, steps_per_epoch=10, epochs=3, run_dir=sys.argv[1])
seen = {"grad_norm": {}, "acc": {}, "late": {}, "val_f1": {}}
for epoch in range(3):
    for i in range(10):
        out = model(x)
        loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad(); loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # a 0-d tensor
        opt.step()
        acc = (out.argmax(1) == y).float().mean()
        step = monitor.step_index
        seen["grad_norm"][step], seen["acc"][step] = grad_norm.item(), acc.item()
        late = {}
        if epoch >= 1:  # a metric first logged mid-run
            late["late"] = seen["late"][step] = 0.25 * i
        monitor.step(loss, grad_norm=grad_norm, acc=acc, **late)
    seen["val_f1"][monitor.step_index] = 0.5 + epoch
    monitor.epoch_end(val_loss=loss.item(), val_f1=torch.tensor(0.5 + epoch))
monitor.close()
json.dump(seen, open(sys.argv[2], "w"))
"""


def _scalars(tb: Path) -> EventAccumulator:
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def _export(run_dir: Path, tb: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lrwatch.cli", "export", str(run_dir), "--tensorboard", str(tb)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr


def test_own_loop_metrics_reach_metrics_csv_and_tensorboard_one_tag_each(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(OWN_LOOP)
    run_dir, seen_path = tmp_path / "run", tmp_path / "seen.json"
    env = {"LRWATCH_NO_SOCKET": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), str(run_dir), str(seen_path)], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = {name: {int(k): v for k, v in values.items()} for name, values in json.loads(seen_path.read_text()).items()}
    with (run_dir / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))  # one call, as pandas.read_csv would
    assert list(rows[0]) == ["step", "epoch", "lr", "loss", "val_loss", "val_acc", "grad_norm", "acc", "val_f1", "late"]
    steps = [r for r in rows if r["loss"]]
    assert [int(r["step"]) for r in steps] == list(range(30))
    for name in ("grad_norm", "acc", "late"):
        logged = {int(r["step"]): float(r[name]) for r in steps if r[name]}
        assert logged == seen[name]  # exact: repr of the float the loop saw
    assert all(r["late"] == "" for r in steps[:10])  # written before the column existed: empty, nothing lost
    tb = tmp_path / "tb"
    _export(run_dir, tb)
    events = _scalars(tb)
    for name in ("grad_norm", "acc", "late", "val_f1"):
        got = {e.step: e.value for e in events.Scalars(name)}
        assert sorted(got) == sorted(seen[name])
        assert np.allclose([got[s] for s in sorted(got)], [seen[name][s] for s in sorted(got)], rtol=1e-6)


def test_hf_trainer_grad_norm_of_every_step_exported_under_its_own_name(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    from lrwatch.integrations.transformers import LRWatchCallback

    config = transformers.GPT2Config(vocab_size=32, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)  # built from a config: nothing downloaded

    class Tokens:
        def __len__(self) -> int:
            return 24

        def __getitem__(self, i: int) -> dict:
            import torch

            ids = (torch.arange(16) * (i % 5 + 1)) % 32
            return {"input_ids": ids, "labels": ids}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), num_train_epochs=2, per_device_train_batch_size=4, learning_rate=5e-3,
        max_grad_norm=0.5, logging_steps=1, eval_strategy="epoch", per_device_eval_batch_size=8, save_strategy="no",
        report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
    )  # fmt: skip
    with using_host(Host(log=None, serve=False)):
        trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(),
                                       callbacks=[LRWatchCallback(run_dir=tmp_path / "run")])  # fmt: skip
        trainer.train()
    logged = {h["step"] - 1: h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h}
    assert len(logged) == trainer.state.global_step == 12
    evals = [h for h in trainer.state.log_history if "eval_loss" in h]
    tb = tmp_path / "tb"
    _export(tmp_path / "run", tb)
    events = _scalars(tb)
    got = {e.step: e.value for e in events.Scalars("grad_norm")}
    assert sorted(got) == sorted(logged)
    assert np.allclose([got[s] for s in sorted(got)], [logged[s] for s in sorted(got)], rtol=1e-6)
    assert len(events.Scalars("val_loss")) == len(evals) == 2
    assert "val_runtime" in events.Tags()["scalars"]  # every eval_* scalar, as val_*


def test_a_widened_metrics_csv_is_followed_by_a_reader_without_duplicates(tmp_path: Path) -> None:
    writer = RunWriter(tmp_path)
    (tmp_path / "events.jsonl").touch()
    for s in range(5):
        writer.add_step(s, s / 5, 0.1, 1.0, {"a": float(s)})
    writer.flush()
    reader = RunReader(tmp_path)
    assert len(reader.history) == 5
    for s in range(5, 9):
        writer.add_step(s, s / 5, 0.1, 1.0, {"a": float(s), "b": -float(s)})
    writer.flush()
    reader.poll()
    assert reader.history.column("step").tolist() == list(range(9))
    assert reader.history.metric("a")[1].tolist() == [float(s) for s in range(9)]
    assert reader.history.metric("b")[0].tolist() == [5, 6, 7, 8]
    writer.close()
    resumed = RunWriter(tmp_path, resume_at=7)  # a resume keeps the wider header, drops rows from step 7
    resumed.add_step(7, 7 / 5, 0.1, 2.0, {"b": 1.5})
    resumed.close()
    again = RunReader(tmp_path)
    assert again.history.column("step").tolist() == list(range(8))
    assert again.history.metric("b")[1].tolist() == [-5.0, -6.0, 1.5]


def test_gpu_metrics_travel_in_the_losses_copy_without_a_sync() -> None:
    copier = FakeCopier()
    losses = DeviceLosses(copier, batch=4, batch_seconds=1.0)
    losses.clock, losses._last_copy = (lambda: 0.0), 0.0  # a fast loop: copies by count only
    FakeGpuLoss.syncs = 0
    for s in range(8):
        losses.push(FakeGpuLoss(float(s)), {"grad_norm": FakeGpuLoss(10.0 + s), "acc": 0.5} if s % 2 else None)
    assert copier.started == [6, 6] and FakeGpuLoss.syncs == 0  # 4 losses and 2 steps' grad norms per copy
    out = losses.drain()
    assert out[0] == 0.0 and out[1] == (1.0, {"acc": 0.5, "grad_norm": 11.0})
    assert [o if isinstance(o, float) else o[0] for o in out] == [float(s) for s in range(8)]


def test_history_holds_a_million_steps_in_16_bytes_a_row() -> None:
    from lrwatch.record.history import MetricHistory

    history = MetricHistory()
    n = 1_000_000
    steps = np.arange(n)
    history.extend(steps, steps / 1000, np.full(n, 0.1), np.ones(n))
    assert history.nbytes() <= 16 * 2**20  # lr and loss as float64 (chunks of 65,536 rows); steps, epochs by rule
    assert history.column("epoch", 999_990, 999_991)[0] == 999_990 / 1000
    history.append(n + 5, math.nan, 0.1, 1.0)  # a gap, epochs unknown: that chunk keeps arrays
    assert history.column("step", n - 1).tolist() == [n - 1, n + 5]
    assert math.isnan(history.column("epoch", n)[0]) and history.row_of(n + 1) == n


def test_lightning_step_and_epoch_metrics_reach_their_columns(tmp_path: Path) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    import torch

    from lrwatch.integrations.lightning import LRWatchCallback
    from tests.conftest import run_rows

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)
            self.logged: list[float] = []

        def training_step(self, batch, _index):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            mae = (self.layer(x) - y).abs().mean().detach()
            self.logged.append(float(mae))
            self.log("mae", mae)  # on_step by default in training
            self.log("seen", float(len(self.logged)), on_step=True, on_epoch=True)  # seen_step and seen_epoch
            return loss

        def validation_step(self, batch, _index):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))
            self.log("val_mae", (self.layer(x) - y).abs().mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(dim=1, keepdim=True))
    module = Module()
    trainer = pl.Trainer(max_epochs=2, callbacks=[LRWatchCallback("cosine", run_dir=tmp_path / "run")],
                         accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)  # fmt: skip
    with using_host(Host(log=None, serve=False)):
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4), torch.utils.data.DataLoader(data))
    steps, epochs, _ = run_rows(tmp_path / "run")
    assert [r.metrics["mae"] for r in steps] == pytest.approx(module.logged, rel=1e-6)
    assert [r.metrics["seen_step"] for r in steps] == list(range(1, 13))
    assert [r[0] for r in epochs] == [6, 12]
    assert all("val_mae" in r[2] and "val_loss" in r[2] and "seen_epoch" in r[2] for r in epochs)


@pytest.mark.parametrize("snapshot_rows", [0, 200], ids=["exact", "decimated"])
def test_metrics_travel_to_an_attached_monitor(tmp_path: Path, monkeypatch, snapshot_rows: int) -> None:
    """Exact when the snapshot holds everything; decimated (the first part min/max, the last rows exact) for a
    long run, the live stream going on from the rows it stands for, with no gap and no duplicate."""
    import threading
    import time

    from lrwatch.live import feed
    from lrwatch.live.client import RemoteRunSource
    from lrwatch.live.host import serve
    from lrwatch.protocol.commands import Stop
    from lrwatch.run.engine import Engine
    from lrwatch.schedule.timeline import Timeline
    from tests.conftest import FakeOptimizer

    monkeypatch.setattr(feed, "SNAPSHOT_ROWS", snapshot_rows)
    engine = Engine(FakeOptimizer(0.1), Timeline.start("cosine", lr=0.1, steps_per_epoch=100, total_steps=10**6),
                    run_dir=tmp_path)  # fmt: skip
    server = serve(engine)
    engine.begin()

    def train() -> None:
        for i in range(10**6):
            metrics = {"grad_norm": 1.0 / (i + 1)} | ({"acc": i / 10} if i % 3 == 0 else {})
            if not engine.step(0.5, metrics=metrics):
                break
            time.sleep(0.0005)
        engine.finish()

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while len(engine.history) < 300:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    source = RemoteRunSource.of_path(server.record.socket).start()  # a snapshot mid-run, then the news
    assert source.ready.wait(10)
    time.sleep(0.2)
    engine.submit(Stop("test"))
    thread.join(10)
    assert source.closed.wait(10)
    got, want = source.history.column("step"), engine.history.column("step")
    for name in ("grad_norm", "acc"):
        steps, values = source.history.metric(name)
        want_steps, want_values = engine.history.metric(name)
        if not snapshot_rows:
            assert np.array_equal(steps, want_steps) and np.array_equal(values, want_values) and len(steps) > 100
        else:  # every point it holds is the run's own, in order; the points after the snapshot all there
            assert len(steps) < len(want_steps) or name == "acc"  # acc: 1 step in 3, under 200 points
            assert np.all(np.diff(steps) > 0)
            at = np.searchsorted(want_steps, steps)
            assert np.array_equal(want_steps[at], steps) and np.array_equal(want_values[at], values)
            assert np.array_equal(steps[-50:], want_steps[-50:])
            assert values.max() == want_values.max()  # the first part keeps its extremes (grad_norm's: step 0)
    if snapshot_rows:
        assert len(got) < len(want) and np.all(np.diff(got) > 0) and np.array_equal(got[-100:], want[-100:])
        assert source.history.column("loss").min() == engine.history.column("loss").min()
    else:
        assert np.array_equal(got, want)


PLAIN_SCRIPT = """
import json, sys, torch
torch.manual_seed(0)
model = torch.nn.Linear(4, 2)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = torch.randn(32, 4), torch.randn(32, 2)
norms = []
for step in range(20):
    loss = torch.nn.functional.mse_loss(model(x), y)
    opt.zero_grad(); loss.backward()
    norms.append(torch.nn.utils.get_total_norm([p.grad for p in model.parameters()]).item())
    opt.step()
json.dump(norms, open(sys.argv[1], "w"))
"""


def test_lrwatch_run_grad_norm_logs_each_steps_total_norm(tmp_path: Path) -> None:
    script, seen = tmp_path / "plain.py", tmp_path / "norms.json"
    script.write_text(PLAIN_SCRIPT)
    env = {"LRWATCH_NO_SOCKET": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "lrwatch.cli", "run", "--headless", "--grad-norm", "--run-dir", str(tmp_path / "run"),
            str(script), "--", str(seen)]  # fmt: skip
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with (tmp_path / "run" / "metrics.csv").open() as f:
        logged = [float(r["grad_norm"]) for r in csv.DictReader(f) if r["loss"]]
    assert logged == pytest.approx(json.loads(seen.read_text()), rel=1e-6)
