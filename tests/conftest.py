from __future__ import annotations

from typing import Any


class FakeOptimizer:
    """Just the part of ``torch.optim.Optimizer`` the engine touches: ``param_groups``."""

    def __init__(self, *lrs: float) -> None:
        self.param_groups: list[dict[str, Any]] = [{"lr": lr} for lr in (lrs or (0.1,))]
