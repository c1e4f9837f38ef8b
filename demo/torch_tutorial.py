"""The classic PyTorch LR-scheduler tutorial loop, ported to lrwatch.

    python demo/torch_tutorial.py --plain            # the original: CosineAnnealingLR stepped per epoch
    python demo/torch_tutorial.py                    # lrwatch drives the LR (headless)
    lrwatch run demo/torch_tutorial.py               # the same, under the live monitor
    lrwatch run --headless demo/torch_tutorial.py    # prints exactly what --plain prints

The port adds three lines (``lrwatch.watch``, ``monitor.step``, ``monitor.close``) and drops the scheduler:
``cosine:T_max=25,eta_min=0.001`` with per-epoch updates is ``CosineAnnealingLR(T_max=25, eta_min=0.001)``.
"""

from __future__ import annotations

import argparse

import torch

EPOCHS = 50
STEPS_PER_EPOCH = 4


def batches(generator: torch.Generator):
    for _ in range(STEPS_PER_EPOCH):
        yield torch.randn(16, 10, generator=generator), torch.randint(0, 2, (16,), generator=generator)


def plain() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=25, eta_min=0.001)
    data = torch.Generator().manual_seed(0)
    for epoch in range(EPOCHS):
        for x, y in batches(data):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        scheduler.step()
        print(f"Epoch {epoch + 1}, Current LR: {scheduler.get_last_lr()[0]:.6f}")


def with_lrwatch() -> None:
    import lrwatch

    torch.manual_seed(0)
    model = torch.nn.Linear(10, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    monitor = lrwatch.watch(
        optimizer,
        model=model,
        epochs=EPOCHS,
        steps_per_epoch=STEPS_PER_EPOCH,
        schedule="cosine:T_max=25,eta_min=0.001",
        per_epoch=True,
    )
    data = torch.Generator().manual_seed(0)
    for epoch in range(EPOCHS):
        for x, y in batches(data):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            if not monitor.step(loss):
                break
        if monitor.stopped:
            break
        print(f"Epoch {epoch + 1}, Current LR: {optimizer.param_groups[0]['lr']:.6f}")
    monitor.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plain", action="store_true", help="the original loop with a PyTorch scheduler")
    plain() if parser.parse_args().plain else with_lrwatch()
