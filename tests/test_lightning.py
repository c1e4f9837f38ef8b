"""LRWatchCallback in a real Lightning Trainer: a tiny model built from code, a few dozen optimizer steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")  # make test installs the extra; this only guards a bare install

from lrwatch.integrations.lightning import LRWatchCallback  # noqa: E402
from lrwatch.protocol.commands import Stop, Switch  # noqa: E402
from lrwatch.schedule.timeline import Timeline  # noqa: E402
from tests.conftest import run_rows  # noqa: E402

BATCHES, ACCUMULATE, EPOCHS = 10, 2, 3  # 5 optimizer steps an epoch, 15 in all


class Regression(pl.LightningModule):
    def __init__(self, with_scheduler: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.with_scheduler = with_scheduler
        self.batch_losses: list[float] = []
        self.stepped_lrs: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.batch_losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        optimizer.register_step_pre_hook(lambda opt, *_: self.stepped_lrs.append(opt.param_groups[0]["lr"]))
        if self.with_scheduler:
            scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return optimizer


def loaders() -> tuple[torch.utils.data.DataLoader, torch.utils.data.DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCHES * 4, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    data = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(data, batch_size=4), torch.utils.data.DataLoader(data, batch_size=8)


def fit(model: Regression, callbacks: list, **trainer_args) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accumulate_grad_batches=ACCUMULATE,
        callbacks=callbacks,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_args,
    )
    train, val = loaders()
    trainer.fit(model, train, val)
    return trainer


def test_each_optimizer_step_is_a_row_with_the_previewed_lr_and_its_own_loss(tmp_path: Path) -> None:
    model = Regression()
    callback = LRWatchCallback("cosine", run_dir=tmp_path)
    trainer = fit(model, [callback])
    steps, epochs, events = run_rows(tmp_path)
    total = BATCHES // ACCUMULATE * EPOCHS
    assert trainer.global_step == total
    assert [r[0] for r in steps] == list(range(total))
    preview = Timeline.start("cosine", lr=0.1, steps_per_epoch=BATCHES // ACCUMULATE, total_steps=total).lrs(
        range(total)
    )
    assert np.allclose([r[2] for r in steps], preview, rtol=0, atol=1e-15)
    assert np.allclose(model.stepped_lrs, preview, rtol=0, atol=1e-15)  # what the optimizer really used
    pairs = np.array(model.batch_losses).reshape(-1, ACCUMULATE).mean(axis=1)
    assert np.allclose([r[3] for r in steps], pairs, rtol=1e-6)  # the step's own loss: the mean of its batches
    assert [r[0] for r in epochs] == [5, 10, 15] and all("val_loss" in r[2] for r in epochs)
    assert [e.kind for e in events][-1] == "finish" and events[-1].data["status"] == "finished"


class Commands(pl.Callback):
    """Sends a command to the run at a given optimizer step, as a key press in the monitor would."""

    def __init__(self, watcher: LRWatchCallback, at: int, command: object) -> None:
        self.watcher, self.at, self.command = watcher, at, command

    def on_train_batch_end(self, trainer, *_args) -> None:
        if trainer.global_step == self.at and self.command is not None:
            self.watcher.monitor.engine.submit(self.command)
            self.command = None


def test_a_switch_lands_at_the_next_optimizer_step(tmp_path: Path) -> None:
    model = Regression()
    callback = LRWatchCallback("cosine", run_dir=tmp_path)
    fit(model, [Commands(callback, 6, Switch("exp:gamma=0.5")), callback])
    steps, _, events = run_rows(tmp_path)
    switch = next(e for e in events if e.kind == "switch")
    assert switch.step == 6  # queued after step 5 (global_step 6), applied before step 6 runs
    lrs = np.array(model.stepped_lrs)
    assert np.allclose(lrs[7:] / lrs[6:-1], 0.5 ** (1 / (BATCHES // ACCUMULATE)))  # exp, per step: γ^(1/epoch)
    assert np.allclose([r[2] for r in steps], lrs)


def test_stop_ends_the_fit_and_the_run(tmp_path: Path) -> None:
    model = Regression()
    callback = LRWatchCallback(run_dir=tmp_path)
    trainer = fit(model, [Commands(callback, 4, Stop("test")), callback])
    _, _, events = run_rows(tmp_path)
    assert trainer.global_step == 4 and trainer.should_stop  # queued at global step 4: applied there
    stop = next(e for e in events if e.kind == "stop")
    assert stop.step == 4 and stop.data["reason"] == "test"
    assert events[-1].kind == "finish" and events[-1].data["status"] == "stopped"


def test_a_scheduler_from_configure_optimizers_is_taken_over_or_kept(tmp_path: Path) -> None:
    model = Regression(with_scheduler=True)
    fit(model, [LRWatchCallback("cosine", run_dir=tmp_path / "driven")])
    _, _, events = run_rows(tmp_path / "driven")
    warning = next(e for e in events if e.kind == "warning")
    assert "StepLR" in warning.data["message"] and "no longer stepped" in warning.data["message"]
    assert min(model.stepped_lrs) > 0.001  # StepLR would have halved it 14 times

    model = Regression(with_scheduler=True)
    fit(model, [LRWatchCallback(drive_lr=False, run_dir=tmp_path / "watched")])
    steps, _, _ = run_rows(tmp_path / "watched")
    assert np.allclose(model.stepped_lrs, [0.1 * 0.5**i for i in range(15)])
    assert np.allclose([r[2] for r in steps], model.stepped_lrs)  # lrwatch logged what StepLR set


def test_lightning_is_not_imported_by_lrwatch() -> None:
    import subprocess
    import sys

    code = "import sys, lrwatch; lrwatch.watch; print('lightning' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


DDP_SCRIPT = """
import sys, torch, lightning.pytorch as pl
sys.path.insert(0, sys.argv[1])
from test_lightning import Regression, loaders
from lrwatch.integrations.lightning import LRWatchCallback
trainer = pl.Trainer(max_epochs=2, accumulate_grad_batches=2, accelerator="cpu", devices=2, strategy="ddp",
                     callbacks=[LRWatchCallback("cosine", run_dir=sys.argv[2])], logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(Regression(), *loaders())
done = f"rank {trainer.global_rank} steps {trainer.global_step} lr {trainer.optimizers[0].param_groups[0]['lr']}"
with open(f"{sys.argv[2]}.rank{trainer.global_rank}", "w") as f:  # not stdout: two ranks' prints interleave
    f.write(done)
"""


def test_under_ddp_every_rank_follows_rank_0s_run(tmp_path: Path) -> None:
    """Lightning's own DDP (2 CPU processes, gloo): one run directory, written by rank 0; the same LRs."""
    import subprocess
    import sys

    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script), str(Path(__file__).parent), str(tmp_path / "run")],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [(tmp_path / f"run.rank{r}").read_text().split() for r in (0, 1)]
    assert [r[1] for r in ranks] == ["0", "1"], done.stderr[-3000:]
    assert ranks[0][2:] == ranks[1][2:]  # same steps, same last LR
    steps, _, events = run_rows(tmp_path / "run")
    per_epoch = -(-(BATCHES // 2) // ACCUMULATE)  # half the batches a rank; a short last group steps too
    assert [r[0] for r in steps] == list(range(2 * per_epoch)) and int(ranks[0][3]) == 2 * per_epoch
    assert events[-1].data["status"] == "finished"
    assert not list(tmp_path.glob("runs"))  # rank 1 wrote nothing


class WarmedUp(Regression):
    """A module with its own schedule: ``SequentialLR`` warmup from 5% then a cosine, stepped every step."""

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        optimizer.register_step_pre_hook(lambda opt, *_: self.stepped_lrs.append(opt.param_groups[0]["lr"]))
        warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.05, total_iters=3)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=12)
        scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[3])
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def test_the_modules_own_warmup_schedule_is_kept_lr_for_lr(tmp_path: Path) -> None:
    """No ``schedule=``: the SequentialLR warmup + cosine is driven as ``cosine:...,warmup=3steps,warmup_start=0.05``
    from the peak LR (not from the warmup's 5%), LR for LR."""
    reference = WarmedUp()
    scheduler = reference.configure_optimizers()["lr_scheduler"]["scheduler"]
    expected = []
    for _ in range(15):
        expected.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    model = WarmedUp()
    fit(model, [LRWatchCallback(run_dir=tmp_path)])
    steps, _, events = run_rows(tmp_path)
    assert np.allclose(model.stepped_lrs, expected, rtol=1e-12, atol=0) and max(model.stepped_lrs) == 0.1
    assert np.allclose([r[2] for r in steps], expected, rtol=1e-12, atol=0)
    start = Timeline.from_dict(events[0].data["timeline"])
    assert str(start.segments[0].spec) == "cosine:T_max=12steps,warmup=3steps,warmup_start=0.05"


class OwnLambda(Regression):
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        optimizer.register_step_pre_hook(lambda opt, *_: self.stepped_lrs.append(opt.param_groups[0]["lr"]))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.9**s)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def test_a_scheduler_without_an_equivalent_keeps_stepping_until_the_first_switch(tmp_path: Path) -> None:
    model = OwnLambda()
    callback = LRWatchCallback(run_dir=tmp_path)
    fit(model, [Commands(callback, 6, Switch("exp:gamma=0.5")), callback])
    lrs = np.array(model.stepped_lrs)
    assert np.allclose(lrs[:6], 0.1 * 0.9 ** np.arange(6))  # the module's own LambdaLR, watched
    assert lrs[6] == lrs[5] and np.allclose(lrs[7:] / lrs[6:-1], 0.5 ** (1 / 5))  # lrwatch's, from the LR in force
    _, _, events = run_rows(tmp_path)
    assert any("no lrwatch equivalent" in e.data.get("message", "") for e in events)
    assert next(e for e in events if e.kind == "switch").data.get("took_over")
