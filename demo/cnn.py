"""A small CNN on generated images (bars, rings, crosses, with noise), on CPU or CUDA, under lrwatch.

    lrwatch run demo/cnn.py -- --epochs 8           # live monitor
    python demo/cnn.py --epochs 2 --device cpu      # headless
    lrwatch run demo/cnn.py --resume runs/XXXX       # continue from its checkpoint (k key, or a stop)

No download: every image is drawn from a seed. Resumable mid-epoch: the data order is checkpointed too.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import lrwatch

SIZE = 24


def make_images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three classes of 24×24 images: a bar, a ring, a cross, each at a random place and size, plus noise."""
    labels = torch.randint(0, 3, (n,), generator=generator)
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    cy, cx = (torch.rand(2, n, 1, 1, generator=generator) * 12 + 6).unbind(0)
    radius = torch.rand(n, 1, 1, generator=generator) * 4 + 3
    dy, dx = yy - cy, xx - cx
    bar = (dy.abs() < 1.5) & (dx.abs() < radius)
    ring = ((dy**2 + dx**2).sqrt() - radius).abs() < 1.2
    cross = ((dy.abs() < 1.2) | (dx.abs() < 1.2)) & (dy.abs() < radius) & (dx.abs() < radius)
    shapes = torch.stack([bar, ring, cross], dim=1).float()
    images = shapes[torch.arange(n), labels].unsqueeze(1)
    images = images + 0.6 * torch.randn(images.shape, generator=generator)
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--schedule", default="cosine")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-size", type=int, default=12_000)
    args = parser.parse_args()

    device = torch.device(args.device)
    data = torch.Generator().manual_seed(0)
    x_train, y_train = (t.to(device) for t in make_images(args.train_size, data))
    x_val, y_val = (t.to(device) for t in make_images(2_000, data))
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (SIZE // 4) ** 2, 64), nn.ReLU(), nn.Linear(64, 3),
    ).to(device)  # fmt: skip
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    steps = args.train_size // args.batch_size
    order = torch.Generator().manual_seed(1)
    epoch_start = {"state": order.get_state()}

    class DataOrder:  # checkpointed with the model: the order of the epoch in progress
        def state_dict(self) -> dict:
            return {"state": epoch_start["state"]}

        def load_state_dict(self, state: dict) -> None:
            order.set_state(state["state"])

    monitor = lrwatch.watch(
        optimizer, model=model, epochs=args.epochs, steps_per_epoch=steps, schedule=args.schedule,
        extra_state={"data_order": DataOrder()}, config={"script": "demo/cnn.py", "device": str(device)},
    )  # fmt: skip
    for epoch in range(monitor.start_epoch, args.epochs):
        epoch_start["state"] = order.get_state()
        perm = torch.randperm(args.train_size, generator=order).to(device)
        first = monitor.step_in_epoch if epoch == monitor.start_epoch else 0
        for i in range(first, steps):
            idx = perm[i * args.batch_size : (i + 1) * args.batch_size]
            loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if not monitor.step(loss):
                monitor.close()
                return
        with torch.no_grad():
            logits = model(x_val)
            val_loss = nn.functional.cross_entropy(logits, y_val).item()
            val_acc = (logits.argmax(1) == y_val).float().mean().item()
        monitor.epoch_end(val_loss=val_loss, val_acc=val_acc)
        print(f"epoch {epoch + 1}: val_loss {val_loss:.4f}  val_acc {100 * val_acc:.1f}%  lr {monitor.lr:.4g}")
    monitor.close()


if __name__ == "__main__":
    main()
