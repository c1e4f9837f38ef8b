"""pytorch/examples' ``time_sequence_prediction``, cut down: an LSTM learns sine waves with LBFGS and a closure.

As in the original, the closure zeroes the gradients, computes the loss, prints it and calls ``backward()``;
``optimizer.step(closure)`` evaluates it up to 20 times per step. Lines marked ``# seen`` record what
``step()`` returned, the first argument (a report path).
"""

import json
import sys

import numpy as np
import torch
from torch import nn, optim

T, L, N = 20, 16, 8
rng = np.random.default_rng(2)
x = np.arange(L) + rng.integers(-4 * T, 4 * T, N).reshape(N, 1)
data = np.sin(x / 1.0 / T).astype("float64")


class Sequence(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm1 = nn.LSTMCell(1, 6)
        self.linear = nn.Linear(6, 1)

    def forward(self, input):
        outputs = []
        h_t = torch.zeros(input.size(0), 6, dtype=torch.double)
        c_t = torch.zeros(input.size(0), 6, dtype=torch.double)
        for input_t in input.split(1, dim=1):
            h_t, c_t = self.lstm1(input_t, (h_t, c_t))
            outputs += [self.linear(h_t)]
        return torch.cat(outputs, dim=1)


torch.manual_seed(0)
input, target = torch.from_numpy(data[3:, :-1]), torch.from_numpy(data[3:, 1:])
seq = Sequence().double()
criterion = nn.MSELoss()
optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
returned = []  # seen
for i in range(int(sys.argv[2]) if len(sys.argv) > 2 else 3):
    print("STEP: ", i)

    def closure():
        optimizer.zero_grad()
        out = seq(input)
        loss = criterion(out, target)
        print("loss:", loss.item())
        loss.backward()
        return loss

    returned.append(optimizer.step(closure).item())  # seen
    with open(sys.argv[1], "w") as f:  # seen
        json.dump({"returned": returned}, f)  # seen
