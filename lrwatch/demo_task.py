"""The demo task: an MLP learning a noisy many-armed spiral, generated from a seed.

Ten interleaved spiral arms in the plane, with noise and 5% flipped labels, so the loss keeps
falling for a long while, has a floor, and reacts visibly when the LR changes. Written on the
same :class:`~lrwatch.run.engine.Engine` API a user's loop uses; its configuration is
:class:`lrwatch.demo.DemoConfig`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

import lrwatch
from lrwatch.demo import DemoConfig

__all__ = ["DemoConfig", "DemoTask", "EpochOrder", "make_spirals", "resolve_device"]


class EpochOrder:
    """The data order's generator, checkpointed as it was when the current epoch began."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.epoch_start = self.generator.get_state()

    def permutation(self, n: int) -> torch.Tensor:
        self.epoch_start = self.generator.get_state()
        return torch.randperm(n, generator=self.generator)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"epoch_start": self.epoch_start}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["epoch_start"])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: CUDA is not available on this machine")
    return torch.device(name)


def make_spirals(n: int, classes: int, noise: float, label_noise: float, rng: np.random.Generator):
    """``n`` points on ``classes`` spiral arms of 1.5 turns, radius in (0, 1], Gaussian noise on the angle."""
    labels = rng.integers(0, classes, n)
    radius = np.sqrt(rng.random(n))
    angle = labels * (2 * np.pi / classes) + radius * 3 * np.pi + rng.normal(0, noise, n) * (0.2 + radius)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    flip = rng.random(n) < label_noise
    labels = np.where(flip, rng.integers(0, classes, n), labels)
    return points.astype(np.float32), labels.astype(np.int64)


class DemoTask:
    """Data, model and optimizer for the demo; :meth:`train` is the training loop."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        rng = np.random.default_rng(config.seed)
        x, y = make_spirals(config.train_size + config.val_size, config.classes, config.noise, config.label_noise, rng)
        as_tensor = lambda a: torch.from_numpy(a).to(self.device)  # noqa: E731
        self.x_train, self.y_train = as_tensor(x[: config.train_size]), as_tensor(y[: config.train_size])
        self.x_val, self.y_val = as_tensor(x[config.train_size :]), as_tensor(y[config.train_size :])
        torch.manual_seed(config.seed)
        h = config.hidden
        layers = [nn.Linear(2, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU()]
        self.model = nn.Sequential(*layers, nn.Linear(h, config.classes)).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=0.9)
        self.loss_fn = nn.CrossEntropyLoss()

    @torch.no_grad()
    def evaluate(self) -> tuple[float, float]:
        self.model.eval()
        logits = self.model(self.x_val)
        loss = self.loss_fn(logits, self.y_val).item()
        acc = (logits.argmax(1) == self.y_val).float().mean().item()
        self.model.train()
        return loss, acc

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One optimizer step on ``batch``: forward, backward, ``optimizer.step()``; the loss (a tensor)."""
        x, y = batch
        loss = self.loss_fn(self.model(x), y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss

    def batches(self, start_step: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches from ``start_step`` on, in the order training sees them (a seeded permutation per epoch)."""
        cfg = self.config
        order = EpochOrder(cfg.seed)
        n, bs, k = cfg.train_size, cfg.batch_size, cfg.steps
        first_epoch = start_step // k
        for _ in range(first_epoch):
            order.permutation(n)  # the generator moves one permutation an epoch, as in train()
        for epoch in range(first_epoch, 1 << 62):
            indices = order.permutation(n).to(self.device)
            for i in range(start_step - epoch * k if epoch == first_epoch else 0, k):
                idx = indices[(i * bs) % n : (i * bs) % n + bs]
                yield self.x_train[idx], self.y_train[idx]

    def find_lr(self, run_dir: str | Path) -> tuple[float | None, float | None]:
        """The LR range test from the initial weights (nothing is trained): ``RUN_DIR/lr_find.csv`` and the
        two suggestions, steepest and min/10."""
        from lrwatch.record.rundir import write_lr_find
        from lrwatch.run.lrfind import range_test

        test = range_test(self.model, self.optimizer, self.train_step, self.batches(0))
        write_lr_find(run_dir, test.rows())
        return test.steepest, test.min_over_10

    def train(self) -> None:
        """The training loop, on the public API: :func:`lrwatch.watch` plus ``step`` and ``epoch_end``."""
        cfg = self.config
        monitor = lrwatch.watch(
            self.optimizer,
            model=self.model,
            epochs=cfg.epochs,
            total_steps=cfg.total_steps,
            steps_per_epoch=cfg.steps,
            schedule=cfg.schedule,
            lr=cfg.lr,
            per_epoch=cfg.per_epoch,
            switches=cfg.switches,
            checkpoint_every=cfg.checkpoint_every,
            train_step=self.train_step,
            batches=self.batches,
            evaluate=lambda: dict(zip(("val_loss", "val_acc"), self.evaluate(), strict=True)),
            config={"command": "demo", **self.config.as_fields(), "device": str(self.device), "steps": cfg.steps},
        )
        k = cfg.steps
        batches = self.batches(monitor.start_step)  # from the seed and the step: a resume needs no data state
        params = list(self.model.parameters())
        while (step := monitor.step_index) < (monitor.total_steps or cfg.epochs * k):  # it follows `length N`
            x, y = next(batches)
            logits = self.model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])  # torch's foreach norm, on device
            self.optimizer.step()
            acc = (logits.detach().argmax(1) == y).float().mean()
            # tensors: on a GPU, read without a per-step sync (with the loss, in one batched copy)
            if not monitor.step(loss, grad_norm=grad_norm, acc=acc):
                break
            if monitor.step_index != step + 1:  # a race kept a candidate: lrwatch trained up to here
                batches = self.batches(monitor.step_index)
            if monitor.step_index % k == 0:
                val_loss, val_acc = self.evaluate()
                monitor.epoch_end(val_loss=val_loss, val_acc=val_acc)
        monitor.close()
