"""A plain PyTorch loop with lrwatch driving its LR (headless): the engine API in a dozen lines.

    python demo/own_loop.py --epochs 5 --switch-at 2

The loop hands lrwatch the optimizer and reports each step's loss; lrwatch sets the LR at every
step boundary from its timeline, applies queued commands there (here: a scripted switch, as a key
press in the monitor would), and writes the run directory.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from lrwatch.protocol.commands import Switch
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--steps-per-epoch", type=int, default=50)
    parser.add_argument("--switch-at", type=float, default=2.0, help="epoch at which to switch to cosine")
    parser.add_argument("--run-dir", default="runs/own-loop")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    model = nn.Linear(10, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = torch.randn(512, 10), torch.randint(0, 2, (512,))

    k = args.steps_per_epoch
    timeline = Timeline.start("exp:gamma=0.9", lr=0.1, steps_per_epoch=k, total_steps=args.epochs * k)
    engine = Engine(optimizer, timeline, run_dir=args.run_dir)
    engine.schedule_command(round(args.switch_at * k), Switch("cosine"))

    def train(engine: Engine) -> None:
        engine.begin()
        for epoch in range(args.epochs):
            for _ in range(k):
                idx = torch.randint(0, len(x), (64,))
                loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if not engine.step(loss.item()):
                    return
            print(f"Epoch {epoch}, Current LR: {optimizer.param_groups[0]['lr']:.6f}")
            engine.end_epoch()

    engine.run(train)
    print(f"{engine.state}; run dir {engine.run_dir}")


if __name__ == "__main__":
    main()
