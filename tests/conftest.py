from __future__ import annotations

import os
from typing import Any

from hypothesis import settings

# The same examples on every run, so CI is deterministic: a property test that fails, fails every time.
# HYPOTHESIS_PROFILE=explore draws new examples (and more of them) when hunting for bugs.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", max_examples=500, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


class FakeOptimizer:
    """Just the part of ``torch.optim.Optimizer`` the engine touches: ``param_groups``."""

    def __init__(self, *lrs: float) -> None:
        self.param_groups: list[dict[str, Any]] = [{"lr": lr} for lr in (lrs or (0.1,))]
