"""karpathy/nanoGPT's ``train.py``, cut down to a tiny GPT on a generated token corpus, single process on the CPU.

Its shape is kept where lrwatch meets it: ``--key=value`` overrides (configurator.py), ``np.memmap`` token
files and ``get_batch``, an evaluation before the first step, gradient accumulation with each micro-batch's
loss divided by ``gradient_accumulation_steps``, ``get_lr`` setting ``param_group["lr"]`` by hand every
iteration, ``GradScaler`` and gradient clipping, AdamW with two param groups, ``ckpt.pt`` saved at
evaluations and ``init_from="resume"``. Lines marked ``# seen`` are the test's: they record what the script
saw (the LR each step used, each step's true loss, what it printed) in ``report``.
"""

import json
import math
import os
import sys
import time
from ast import literal_eval

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

out_dir = "out"
data_dir = "data"
eval_interval = 10
log_interval = 1
eval_iters = 2
always_save_checkpoint = True
init_from = "scratch"  # or "resume"
gradient_accumulation_steps = 4
batch_size = 4
block_size = 16
n_layer = 1
n_head = 2
n_embd = 16
vocab_size = 48
learning_rate = 1e-2
max_iters = 20
weight_decay = 1e-1
beta1, beta2 = 0.9, 0.95
grad_clip = 1.0
decay_lr = True
warmup_iters = 4
lr_decay_iters = 20
min_lr = 1e-3
startup_delay = 0.0  # seconds before the loop: what compile=True and a long first evaluation cost
report = ""  # seen
for arg in sys.argv[1:]:  # configurator.py
    key, val = arg[2:].split("=", 1)
    assert key in globals(), f"unknown config key {key}"
    try:
        val = literal_eval(val)
    except (SyntaxError, ValueError):
        pass
    globals()[key] = val

os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(1337)


def prepare(directory: str) -> None:
    """A corpus with structure to learn: noisy counting runs over the vocabulary."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", 20_000), ("val", 2_000)):
        path = os.path.join(directory, f"{split}.bin")
        if os.path.exists(path):
            continue
        tokens = (np.arange(n) * 7 + rng.integers(0, 3, n)) % vocab_size
        out = np.memmap(path, dtype=np.uint16, mode="w+", shape=(n,))
        out[:] = tokens
        out.flush()


prepare(data_dir)


def get_batch(split):
    data = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy((data[i : i + block_size]).astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy((data[i + 1 : i + 1 + block_size]).astype(np.int64)) for i in ix])
    return x, y


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(n_embd), nn.LayerNorm(n_embd)
        self.c_attn, self.c_proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)
        self.mlp = nn.Sequential(nn.Linear(n_embd, 4 * n_embd), nn.GELU(), nn.Linear(4 * n_embd, n_embd))

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(self.ln_1(x)).split(n_embd, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab_size, n_embd), nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList([Block() for _ in range(n_layer)])
        self.ln_f, self.lm_head = nn.LayerNorm(n_embd), nn.Linear(n_embd, vocab_size, bias=False)

    def forward(self, idx, targets=None):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1)) if targets is not None else None
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


iter_num = 0
best_val_loss = 1e9
model = GPT()
if init_from == "resume":
    checkpoint = torch.load(os.path.join(out_dir, "ckpt.pt"), map_location="cpu")
    model.load_state_dict(checkpoint["model"])
    iter_num = checkpoint["iter_num"]
    best_val_loss = checkpoint["best_val_loss"]
scaler = torch.amp.GradScaler("cpu", enabled=False)
optimizer = model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2))
if init_from == "resume":
    optimizer.load_state_dict(checkpoint["optimizer"])
    checkpoint = None

seen = {"iters": [], "set_lrs": [], "used_lrs": [], "step_losses": [], "printed": [], "evals": []}  # seen
optimizer.register_step_pre_hook(lambda opt, a, k: seen["used_lrs"].append(opt.param_groups[0]["lr"]))  # seen


@torch.no_grad()
def estimate_loss():
    out = {}
    model.eval()
    for split in ["train", "val"]:
        losses = torch.zeros(eval_iters)
        for k in range(eval_iters):
            X, Y = get_batch(split)
            _logits, loss = model(X, Y)
            losses[k] = loss.item()
        out[split] = losses.mean()
    model.train()
    return out


def get_lr(it):
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    if it > lr_decay_iters:
        return min_lr
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


time.sleep(startup_delay)
X, Y = get_batch("train")
t0 = time.time()
while True:
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for param_group in optimizer.param_groups:
        param_group["lr"] = lr
    if iter_num % eval_interval == 0:
        losses = estimate_loss()
        print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
        seen["evals"].append([iter_num, float(losses["val"])])  # seen
        if losses["val"] < best_val_loss or always_save_checkpoint:
            best_val_loss = losses["val"]
            if iter_num > 0:
                checkpoint = {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "iter_num": iter_num,
                    "best_val_loss": best_val_loss,
                }
                print(f"saving checkpoint to {out_dir}")
                torch.save(checkpoint, os.path.join(out_dir, "ckpt.pt"))
    step_loss = 0.0  # seen
    for _micro_step in range(gradient_accumulation_steps):
        logits, loss = model(X, Y)
        loss = loss / gradient_accumulation_steps
        step_loss = step_loss + loss.detach()  # seen: the step's true loss, the mean of its micro-batches
        X, Y = get_batch("train")
        scaler.scale(loss).backward()
    if grad_clip != 0.0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    t1 = time.time()
    dt, t0 = t1 - t0, t1
    if iter_num % log_interval == 0:
        lossf = loss.item() * gradient_accumulation_steps
        print(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms")
    seen["iters"].append(iter_num)  # seen
    seen["set_lrs"].append(lr)  # seen
    seen["step_losses"].append(float(step_loss))  # seen
    seen["printed"].append(lossf)  # seen
    if report:  # seen
        with open(report, "w") as f:  # seen
            json.dump(seen, f)  # seen
    iter_num += 1
    if iter_num > max_iters:
        break
