"""One process of ``ui_overhead``: the demo's training steps/s with and without the monitor's UI.

``interleaved STEPS`` (the figure): the demo's model and data under the monitor (headless Textual
driver at 120×40, default fps). After a warm-up, the monitor's frame timer is started and stopped in
1 s windows, in ABBA groups so a linear drift within a group cancels, and each window counts the
steps the training thread made. With the timer stopped the UI thread sleeps in its event loop, as it
does not exist under ``--headless``: the two rates differ by what the UI costs, measured seconds
apart in the same process. Prints ``{"groups": [[[ui_on, steps, seconds, ui_cpu_seconds], ...], ...]}``.

``headless STEPS`` / ``tui STEPS`` (the whole-run comparison, ``run.py --whole-runs``): the demo for
STEPS steps one way or the other in a fresh process; prints ``{"steps_per_s": ...}`` after a warm-up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time

from lrwatch.demo_task import DemoConfig, DemoTask
from lrwatch.live.host import Host, run_loop

WARMUP = 1000
SETTLE_S = 6.0  # the first frames, the preview and gc.freeze (3 s) are behind us
WINDOW_S = 1.0  # a frame every 0.5 s, the charts at most once a second: each "on" window holds both
ORDER = (True, False, False, True)  # ABBA: a linear drift within a group cancels
MEASURE_S = 44.0  # per process: 11 groups


def interleaved(steps: int) -> dict[str, list]:
    """ABBA groups of windows, UI on and off, until the run nears its end: per window the steps
    made, the seconds and the UI thread's CPU seconds."""
    from lrwatch.app import LRWatchApp

    # The demo's model and data in one epoch longer than any machine trains in MEASURE_S (the
    # measurement is bounded by time, not steps): a validation pass inside a 1 s window would be
    # noise. The loss chart's recent window (w) scrolls, so the charts redraw at their cap, once a
    # second, however fast the machine: the most the UI does.
    task = DemoTask(DemoConfig(device="cpu", epochs=1, steps_per_epoch=10**9))
    host = Host(headless=False, run_dir=tempfile.mkdtemp(), log=None)
    windows: list[tuple[bool, int, float, float]] = []

    async def run() -> None:
        app = LRWatchApp.in_process(task.train, host=host)
        async with app.run_test(size=(120, 40)) as pilot:
            started = time.perf_counter()
            while host.engine is None or host.engine.step_index < WARMUP or time.perf_counter() - started < SETTLE_S:
                await pilot.pause(0.1)
            engine = host.engine
            await pilot.press("w")
            measuring = time.perf_counter()
            while time.perf_counter() - measuring < MEASURE_S and engine.state == "running":
                for ui_on in ORDER:
                    if ui_on:
                        app.frame_timer.resume()
                    else:
                        app.frame_timer.pause()
                    step, t, cpu = engine.step_index, time.perf_counter(), time.thread_time()
                    await asyncio.sleep(WINDOW_S)
                    windows.append((ui_on, engine.step_index - step, time.perf_counter() - t, time.thread_time() - cpu))
            if engine.state != "running":
                raise SystemExit(f"the run ended before the measurement did ({engine.state})")
            app.frame_timer.resume()
            await pilot.press("q")

    asyncio.run(run())
    groups = [windows[i : i + len(ORDER)] for i in range(0, len(windows), len(ORDER))]
    return {"groups": [[list(w) for w in g] for g in groups]}


def whole_run(mode: str, steps: int) -> dict[str, float]:
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

    host = Host(headless=mode == "headless", run_dir=tempfile.mkdtemp(), log=None, on_engine=on_engine)
    if mode == "headless":
        run_loop(host, task.train)
    else:
        from lrwatch.app import LRWatchApp

        async def run() -> None:
            app = LRWatchApp.in_process(task.train, host=host)
            async with app.run_test(size=(120, 40)) as pilot:
                while "end" not in marks:
                    await pilot.pause(0.1)
                await pilot.press("q")

        asyncio.run(run())
    return {"steps_per_s": (steps - 1 - WARMUP) / (marks["end"] - marks["start"])}


def main() -> None:
    mode = sys.argv[1]
    steps = int(sys.argv[2])
    result = interleaved(steps) if mode == "interleaved" else whole_run(mode, steps)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
