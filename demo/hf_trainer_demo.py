"""The Hugging Face Trainer under lrwatch: one callback. A tiny GPT-2 built from a config (nothing
downloaded) learns to continue generated counting sequences.

    lrwatch run demo/hf_trainer_demo.py -- --epochs 4   # live monitor; e c r s switch the schedule
    python demo/hf_trainer_demo.py --epochs 1           # headless, attachable (lrwatch attach)

Needs ``pip install lrwatch[transformers]``.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
import transformers

from lrwatch.integrations.transformers import LRWatchCallback

VOCAB, LENGTH = 32, 16


class Counting(torch.utils.data.Dataset):
    """Sequences ``a, a+d, a+2d, … (mod VOCAB)``: the next token follows from the two before it."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        start = torch.randint(0, VOCAB, (n, 1), generator=g)
        step = torch.randint(1, 5, (n, 1), generator=g)
        self.ids = (start + step * torch.arange(LENGTH)) % VOCAB

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--schedule", default="cosine")
    args = parser.parse_args()
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=LENGTH, n_embd=64, n_layer=2, n_head=4)
    model = transformers.GPT2LMHeadModel(config)
    output_dir = tempfile.mkdtemp(prefix="lrwatch-hf-")
    training = transformers.TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=args.epochs,
        learning_rate=args.lr,
        per_device_train_batch_size=32,
        eval_strategy="epoch",
        logging_steps=20,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model,
        args=training,
        train_dataset=Counting(4096, seed=0),
        eval_dataset=Counting(256, seed=1),
        callbacks=[LRWatchCallback(args.schedule)],  # the one line lrwatch needs
    )
    trainer.train()


if __name__ == "__main__":
    main()
