"""The demo's model and data under DDP: every rank on its own shard, lrwatch driving the LR of all.

    torchrun --standalone --nproc_per_node=2 demo/ddp.py --epochs 5 --switch 2:exp:gamma=0.9
    lrwatch run --nproc-per-node 2 demo/ddp.py -- --epochs 5           # with the monitor (rank 0's)

gloo on CPU, NCCL when CUDA is there (rank r on ``cuda:r``). The same ``lrwatch.watch`` call as
in a one-process loop: rank 0 writes the run directory and serves ``lrwatch attach`` / ``send``;
every command lands on every rank at the same step. At the end (also after a stop) each rank
prints ``rank R: steps N lr_sha256 X params_sha256 Y``: the SHA-256 of the LRs it applied
(float64, in order) and of its final weights, so that anyone can check that all ranks agree.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import lrwatch
from lrwatch.demo_task import DemoConfig, DemoTask, EpochOrder


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default: one pass over the rank's shard")
    parser.add_argument("--batch-size", type=int, default=128, help="per rank")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--schedule", default=None, help="default cosine (on a resume: the one in force)")
    parser.add_argument("--switch", action="append", default=[], metavar="EPOCH:SPEC")
    parser.add_argument("--run-dir", default=None, help="rank 0's run directory (default: runs/<time>)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue a run from its checkpoint")
    parser.add_argument("--checkpoint-every", type=float, default=None, metavar="EPOCHS")
    parser.add_argument("--train-size", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--sync-stats", action="store_true", help="also print what lrwatch's collective cost (make bench reads it)"
    )
    parser.add_argument("--on-divergence", choices=("pause", "stop", "rollback"), default=None)
    parser.add_argument(
        "--nan-at", default=None, metavar="RANK:STEP", help="report a NaN loss on one rank at one step (try divergence)"
    )
    parser.add_argument(
        "--fail-at", default=None, metavar="RANK:STEP", help="raise on one rank at one step (try a failure)"
    )
    return parser.parse_args(argv)


def digest(values: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shard = args.train_size // world
    steps = args.steps_per_epoch or max(1, shard // args.batch_size)
    config = DemoConfig(
        epochs=args.epochs,
        steps_per_epoch=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=f"cuda:{local_rank}" if cuda else "cpu",
        train_size=args.train_size,
    )
    task = DemoTask(config)  # every rank builds the same data and weights from the seed
    model = DistributedDataParallel(task.model, device_ids=[local_rank] if cuda else None)
    optimizer = task.optimizer
    order = EpochOrder(args.seed)  # the same permutation on every rank; rank r takes every world-th item
    applied: list[float] = []
    optimizer.register_step_pre_hook(lambda opt, *_: applied.append(float(opt.param_groups[0]["lr"])))
    monitor = lrwatch.watch(
        optimizer,
        model=task.model,
        epochs=args.epochs,
        steps_per_epoch=steps,
        schedule=args.schedule,
        lr=args.lr,
        switches=args.switch,
        run_dir=args.run_dir,
        resume=args.resume,
        checkpoint_every=args.checkpoint_every,
        extra_state={"data_order": order},
        on_divergence=args.on_divergence,
        config={"command": "demo/ddp.py", "world_size": world, "device": config.device, **vars(args)},
    )
    bs = args.batch_size
    loop_started = time.perf_counter()
    nan_rank, nan_step = (int(v) for v in args.nan_at.split(":")) if args.nan_at else (-1, -1)
    fail_rank, fail_step = (int(v) for v in args.fail_at.split(":")) if args.fail_at else (-1, -1)
    for epoch in range(monitor.start_epoch, args.epochs):
        indices = order.permutation(args.train_size)[rank::world].to(task.device)
        first = monitor.step_in_epoch if epoch == monitor.start_epoch else 0
        stopped = False
        for i in range(first, steps):
            start = (i * bs) % len(indices)
            idx = indices[start : start + bs]
            loss = task.loss_fn(model(task.x_train[idx]), task.y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if rank == fail_rank and monitor.engine.step_index == fail_step:
                raise RuntimeError(f"a failure on rank {rank} at step {fail_step} (--fail-at)")
            if rank == nan_rank and monitor.engine.step_index == nan_step:
                loss = torch.full_like(loss, float("nan"))  # what this rank reports, not what it trained on
            if not monitor.step(loss):
                stopped = True
                break
        if stopped:
            break
        val_loss, val_acc = task.evaluate()  # the same weights on every rank: the same numbers
        monitor.epoch_end(val_loss=val_loss, val_acc=val_acc)
    loop_seconds = time.perf_counter() - loop_started
    monitor.close()
    sync = monitor.engine.sync
    if args.sync_stats and sync is not None:
        print(
            f"rank {rank}: sync_seconds {sync.sync_seconds:.6f} syncs {sync.syncs} "
            f"steps {monitor.engine.steps_taken} loop_seconds {loop_seconds:.6f}",
            flush=True,
        )
    params = torch.cat([p.detach().reshape(-1).double().cpu() for p in task.model.parameters()]).numpy()
    lr_hash = digest(np.asarray(applied, dtype=np.float64))
    print(f"rank {rank}: steps {len(applied)} lr_sha256 {lr_hash} params_sha256 {digest(params)}", flush=True)
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
