"""One side of ``ui_overhead``: the demo for N steps, headless or under the monitor (headless Textual
driver at 120×40, default fps). Prints ``{"steps_per_s": ...}`` measured after a warm-up of 1,000 steps."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time

from lrwatch.api import Host, run_loop
from lrwatch.demo import DemoConfig, DemoTask

WARMUP = 1000


def main() -> None:
    mode, steps = sys.argv[1], int(sys.argv[2])
    config = DemoConfig(epochs=1, steps_per_epoch=steps, device="cpu")
    task = DemoTask(config)
    marks: dict[str, float] = {}

    def on_engine(engine) -> None:
        original = engine.step

        def step(loss: float) -> bool:
            if engine.step_index == WARMUP:
                marks["start"] = time.perf_counter()
            if engine.step_index == steps - 1:
                marks["end"] = time.perf_counter()
            return original(loss)

        engine.step = step  # type: ignore[method-assign]

    run_dir = tempfile.mkdtemp()
    host = Host(headless=mode == "headless", run_dir=run_dir, log=None, on_engine=on_engine)
    if mode == "headless":
        run_loop(host, task.train)
    else:
        from lrwatch.app import LRWatchApp

        async def run() -> None:
            app = LRWatchApp(None, task.train, host=host)
            async with app.run_test(size=(120, 40)) as pilot:
                while "end" not in marks:
                    await pilot.pause(0.1)
                await pilot.press("q")

        asyncio.run(run())
    print(json.dumps({"steps_per_s": (steps - 1 - WARMUP) / (marks["end"] - marks["start"])}))


if __name__ == "__main__":
    main()
