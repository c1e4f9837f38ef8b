"""A loop with a ``LambdaLR`` of the script's own (a lambda lrwatch has no spec for), stepped after each batch
(``sys.argv[1]`` ``batch``) or once per epoch (``epoch``); or, with ``onecycle``, a ``OneCycleLR`` stepped after
each batch. Lines marked ``# seen`` record, in ``sys.argv[2]``, the LR each optimizer step used.
"""

import json
import math
import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

kind, report = sys.argv[1], sys.argv[2]
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 6
torch.manual_seed(0)
x = torch.randn(64, 10)
y = x[:, :1] * 2 - x[:, 1:2]
loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
model = nn.Linear(10, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
if kind == "onecycle":
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=epochs * len(loader))
else:
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 + 0.5 * math.cos(t / 3) * 0.97**t)
seen = {"used": []}  # seen
optimizer.register_step_pre_hook(lambda opt, a, k: seen["used"].append(opt.param_groups[0]["lr"]))  # seen
loss_fn = nn.MSELoss()
for epoch in range(epochs):
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        if kind != "epoch":
            scheduler.step()
    if kind == "epoch":
        scheduler.step()
    print(f"Epoch {epoch}, lr {scheduler.get_last_lr()[0]:.6f}")
with open(report, "w") as f:  # seen
    json.dump(seen, f)  # seen
