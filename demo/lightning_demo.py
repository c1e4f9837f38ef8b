"""PyTorch Lightning under lrwatch: one callback. A small CNN on generated images (``demo/cnn.py``'s data).

    lrwatch run demo/lightning_demo.py -- --epochs 8    # live monitor; e c r s switch the schedule
    python demo/lightning_demo.py --epochs 2            # headless, attachable (lrwatch attach)

Needs ``pip install lrwatch[lightning]``. No download: the images are drawn from a seed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cnn import make_images

from lrwatch.integrations.lightning import LRWatchCallback


class ShapesClassifier(pl.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.net = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 3),
        )  # fmt: skip

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> torch.Tensor:
        images, labels = batch
        return nn.functional.cross_entropy(self.net(images), labels)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _index: int) -> None:
        images, labels = batch
        logits = self.net(images)
        self.log("val_loss", nn.functional.cross_entropy(logits, labels))
        self.log("val_acc", (logits.argmax(dim=1) == labels).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--schedule", default="cosine")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    train = torch.utils.data.TensorDataset(*make_images(4096, generator))
    val = torch.utils.data.TensorDataset(*make_images(512, generator))
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator="auto",
        callbacks=[LRWatchCallback(args.schedule)],  # the one line lrwatch needs
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
    )
    trainer.fit(
        ShapesClassifier(args.lr),
        torch.utils.data.DataLoader(train, batch_size=64, shuffle=True),
        torch.utils.data.DataLoader(val, batch_size=256),
    )


if __name__ == "__main__":
    main()
