"""The tutorial loop with a PyTorch scheduler stepped once per epoch, as the docs and most tutorials write it.

``sys.argv[1]``: ``sequential`` (``SequentialLR(LinearLR warmup, CosineAnnealingLR)``) or ``plateau``
(``ReduceLROnPlateau`` on a validation loss that stops improving: its target is noise). Each epoch prints
``scheduler.get_last_lr()`` and saves a checkpoint with the scheduler's state (``sys.argv[2]`` + ``.pt``).
Lines marked ``# seen`` record, in ``sys.argv[2]``, the LR each optimizer step used and what
``get_last_lr()`` said after each epoch's ``scheduler.step()``.
"""

import json
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

kind, report = sys.argv[1], sys.argv[2]
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 8
torch.manual_seed(0)
x = torch.randn(64, 10)
y = torch.randn(64, 1) if kind == "plateau" else x[:, :1] * 2 - x[:, 1:2]
loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
x_val, y_val = torch.randn(32, 10), torch.randn(32, 1)
model = nn.Linear(10, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
if kind == "sequential":
    warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=2)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - 2)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[2])
else:
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0)
seen = {"used": [], "last_lr": [], "private_last_lr": []}  # seen
optimizer.register_step_pre_hook(lambda opt, a, k: seen["used"].append(opt.param_groups[0]["lr"]))  # seen
loss_fn = nn.MSELoss()
for epoch in range(epochs):
    model.train()
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        val_loss = loss_fn(model(x_val), y_val).item()
    if kind == "plateau":
        scheduler.step(val_loss)
    else:
        scheduler.step()
    print(f"Epoch {epoch}, val loss {val_loss:.4f}, lr {scheduler.get_last_lr()[0]:.6f}")
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    torch.save(checkpoint, report + ".pt")
    seen["last_lr"].append(scheduler.get_last_lr()[0])  # seen
    seen["private_last_lr"].append(scheduler._last_lr[0])  # seen
    with open(report, "w") as f:  # seen
        json.dump(seen, f)  # seen
