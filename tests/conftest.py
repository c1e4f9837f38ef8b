from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
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


def run_rows(run_dir: Path) -> tuple[list[tuple], list[tuple], list]:
    """A run directory as the tests read it: step rows, epoch rows (``metrics.csv``) and events."""
    from lrwatch.record.rundir import parse_event_line, read_metric_rows

    rows = list(read_metric_rows(run_dir / "metrics.csv"))
    events = [parse_event_line(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [r for r in rows if len(r) == 4], [r for r in rows if len(r) == 3], events


async def app_wait_for(predicate: Callable[[], bool], pilot: Any, timeout: float = 5.0) -> None:
    """Let a Pilot-driven app run until ``predicate()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await pilot.pause(0.02)


@pytest.fixture(autouse=True)
def no_process_outlives_its_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, end any lrwatch process still running in its ``tmp_path`` (a test that failed half way
    leaves its run behind otherwise, and that run's CPU then slows every later test)."""
    if "tmp_path" not in request.fixturenames:
        yield
        return
    path = str(request.getfixturevalue("tmp_path")).encode()  # now: torn down after this fixture
    yield
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if path in cmdline and b"lrwatch" in cmdline:
            with contextlib.suppress(OSError):
                os.kill(int(entry), signal.SIGKILL)
