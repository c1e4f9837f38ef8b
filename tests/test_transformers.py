"""LRWatchCallback in a real Hugging Face Trainer: tiny models built from code and from a config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")  # make test installs the extra

from lrwatch.integrations.transformers import LRWatchCallback  # noqa: E402
from lrwatch.protocol.commands import Stop, Switch  # noqa: E402
from lrwatch.schedule.timeline import Timeline  # noqa: E402
from tests.conftest import run_rows  # noqa: E402

SAMPLES, BATCH, ACCUMULATE, EPOCHS = 40, 4, 2, 3  # 5 optimizer steps an epoch, 15 in all


class Regression(torch.nn.Module):
    """A model as the Trainer wants one: keyword inputs, a dict with ``loss`` out."""

    def __init__(self, with_loss: bool = True) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.with_loss = with_loss
        self.batch_losses: list[float] = []

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        prediction = self.layer(x)
        out = {"logits": prediction}
        if labels is not None:
            loss = torch.nn.functional.mse_loss(prediction, labels)
            if self.training:
                self.batch_losses.append(float(loss.detach()))
            if self.with_loss:
                out["loss"] = loss
        return out


class Pairs(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(SAMPLES, 4, generator=g)
        self.y = self.x.sum(dim=1, keepdim=True)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


class Recorder(transformers.TrainerCallback):
    """The LR each optimizer step used, and a command sent to the run at a given step (a key press)."""

    def __init__(self, watcher: LRWatchCallback | None = None, at: int = -1, command: object = None) -> None:
        self.watcher, self.at, self.command = watcher, at, command
        self.lrs: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at and self.command is not None:
            self.watcher.monitor.engine.submit(self.command)
            self.command = None


def train(tmp_path: Path, model: torch.nn.Module, callbacks: list, **args) -> transformers.Trainer:
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=EPOCHS,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=8,
        gradient_accumulation_steps=ACCUMULATE,
        learning_rate=0.1,
        optim="sgd",
        eval_strategy="epoch",
        logging_steps=5,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        dataloader_num_workers=0,
        **{"lr_scheduler_type": "linear", **args},
    )
    trainer = transformers.Trainer(
        model=model, args=arguments, train_dataset=Pairs(), eval_dataset=Pairs(), callbacks=callbacks
    )
    trainer.train()
    return trainer


def test_each_optimizer_step_is_a_row_with_the_previewed_lr_and_its_own_loss(tmp_path: Path) -> None:
    model, recorder = Regression(), Recorder()
    trainer = train(tmp_path, model, [LRWatchCallback("cosine", run_dir=tmp_path / "run"), recorder])
    steps, epochs, events = run_rows(tmp_path / "run")
    total = SAMPLES // BATCH // ACCUMULATE * EPOCHS
    assert trainer.state.global_step == total and [r[0] for r in steps] == list(range(total))
    preview = Timeline.start("cosine", lr=0.1, steps_per_epoch=total // EPOCHS, total_steps=total).lrs(range(total))
    assert np.allclose([r[2] for r in steps], preview, rtol=0, atol=1e-15)
    assert np.allclose(recorder.lrs, preview, rtol=0, atol=1e-15)  # the Trainer's linear decay is not stepped
    pairs = np.array(model.batch_losses).reshape(-1, ACCUMULATE).mean(axis=1)
    assert np.allclose([r[3] for r in steps], pairs, rtol=1e-6)  # no lag: step s carries step s's loss
    assert [r[0] for r in epochs] == [5, 10, 15] and all("val_loss" in r[2] for r in epochs)
    warning = next(e for e in events if e.kind == "warning")
    assert "LambdaLR" in warning.data["message"]
    assert events[-1].kind == "finish" and events[-1].data["status"] == "finished"


def test_a_switch_lands_at_the_next_optimizer_step_and_stop_ends_training(tmp_path: Path) -> None:
    watcher = LRWatchCallback("cosine", run_dir=tmp_path / "switch")
    recorder = Recorder(watcher, 6, Switch("exp:gamma=0.5"))
    train(tmp_path, Regression(), [watcher, recorder])
    steps, _, events = run_rows(tmp_path / "switch")
    # sent at global step 6, after the boundary that set step 6's LR: it lands at the next one, step 7
    assert next(e for e in events if e.kind == "switch").step == 7
    lrs = np.array(recorder.lrs)
    assert np.allclose(lrs[8:] / lrs[7:-1], 0.5 ** (1 / 5))
    assert np.allclose([r[2] for r in steps], lrs)

    watcher = LRWatchCallback(run_dir=tmp_path / "stop")
    trainer = train(tmp_path, Regression(), [watcher, Recorder(watcher, 4, Stop("test"))])
    _, _, events = run_rows(tmp_path / "stop")
    assert trainer.state.global_step == 5  # the stop was applied at the boundary after step 4's row
    assert events[-1].kind == "finish" and events[-1].data["status"] == "stopped"


def test_watching_only_and_a_model_without_a_loss_output(tmp_path: Path) -> None:
    recorder = Recorder()
    train(tmp_path, Regression(), [LRWatchCallback(drive_lr=False, run_dir=tmp_path / "watched"), recorder])
    steps, _, _ = run_rows(tmp_path / "watched")
    assert recorder.lrs[0] == 0.1 and recorder.lrs[-1] < 0.01  # the Trainer's linear decay
    assert np.allclose([r[2] for r in steps], recorder.lrs)

    class LossOutside(transformers.Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(x=inputs["x"])
            return torch.nn.functional.mse_loss(out["logits"], inputs["labels"])

    model = Regression(with_loss=False)
    arguments = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out2"), num_train_epochs=1, per_device_train_batch_size=BATCH, learning_rate=0.1,
        optim="sgd", logging_steps=2, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    trainer = LossOutside(model=model, args=arguments, train_dataset=Pairs(), callbacks=[
        LRWatchCallback(run_dir=tmp_path / "logged")])  # fmt: skip
    trainer.train()
    steps, _, events = run_rows(tmp_path / "logged")
    assert [r[0] for r in steps] == list(range(10))  # every step has its row, with the logged window's loss
    logged = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert np.allclose([r[3] for r in steps[:10:2]], logged, rtol=1e-4)
    assert any("no loss in the model's outputs" in e.data.get("message", "") for e in events)


def reference_lrs(make, n: int) -> np.ndarray:
    """The LRs a transformers schedule gives an SGD at lr 0.1 over ``n`` optimizer steps."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return np.array(out)


def test_the_trainers_own_schedule_with_warmup_is_kept_lr_for_lr(tmp_path: Path) -> None:
    """No ``schedule=``: ``lr_scheduler_type="cosine"`` with ``warmup_steps`` trains (its first LR is 0, a valid
    LR), lrwatch drives exactly the Trainer's schedule and previews it, and a switch continues from the LR in force."""
    total = SAMPLES // BATCH // ACCUMULATE * EPOCHS
    expected = reference_lrs(lambda o: transformers.get_cosine_schedule_with_warmup(o, 4, total), total)
    recorder = Recorder()
    train(tmp_path, Regression(), [LRWatchCallback(run_dir=tmp_path / "own"), recorder],
          lr_scheduler_type="cosine", warmup_steps=4)  # fmt: skip
    steps, _, events = run_rows(tmp_path / "own")
    assert recorder.lrs[0] == 0.0 and np.allclose(recorder.lrs, expected, rtol=1e-12, atol=0)
    assert np.allclose([r[2] for r in steps], expected, rtol=1e-12, atol=0)
    start = Timeline.from_dict(events[0].data["timeline"])
    assert str(start.segments[0].spec) == "cosine:T_max=11steps,warmup=4steps" and start.initial_lr == 0.1
    assert np.allclose(start.lrs(np.arange(total)), expected, rtol=1e-12, atol=0)  # the preview is the schedule
    assert any("the Trainer's own schedule" in e.data.get("message", "") for e in events)

    watcher = LRWatchCallback(run_dir=tmp_path / "switched")
    recorder = Recorder(watcher, 6, Switch("exp:gamma=0.5"))
    train(tmp_path, Regression(), [watcher, recorder], lr_scheduler_type="linear", warmup_steps=3)
    lrs = np.array(recorder.lrs)
    assert np.allclose(lrs[:7], reference_lrs(lambda o: transformers.get_linear_schedule_with_warmup(o, 3, 15), 7))
    assert lrs[7] == lrs[6] and np.allclose(lrs[8:] / lrs[7:-1], 0.5 ** (1 / 5))  # continued from the LR in force
