"""lrwatch's performance figures: ``make bench`` (plain Python; every ratio measured side by side).

Prints one line per figure, ``bench: NAME VALUE UNIT (target OP VALUE) PASS|MISS``, then a table.
A/B ratios alternate the two sides over several repeats and take the median, because the machine
is shared and absolute times drift.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import json
import os
import pty
import statistics
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RESULTS: list[tuple[str, float, str, str, float, str]] = []


def report(name: str, value: float, unit: str, op: str, target: float, detail: str = "") -> None:
    ok = value >= target if op == ">=" else value <= target
    RESULTS.append((name, value, unit, op, target, detail))
    print(f"bench: {name} {value:.3g} {unit} (target {op} {target:g}) {'PASS' if ok else 'MISS'}", flush=True)


# -- ui_overhead -----------------------------------------------------------------------------
def ui_overhead(processes: int) -> None:
    """Training steps/s with the monitor's UI running ÷ with it stopped, in 1 s windows (ABBA) of one run.

    Each process is the demo under the monitor (headless Textual driver, 120×40, default fps);
    ``bench/ui_run.py`` says why the two sides alternate inside one run rather than between runs.
    The figure is the ratio of the summed rates; the interval is a bootstrap over ABBA groups.
    """
    groups: list[list[list[float]]] = []
    for _ in range(processes):
        argv = [PY, str(ROOT / "bench" / "ui_run.py"), "interleaved", "0"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True)
        groups += json.loads(out.stdout.strip().splitlines()[-1])["groups"]

    def ratio(picked: list[list[list[float]]]) -> float:
        windows = [w for g in picked for w in g]
        on = sum(w[1] for w in windows if w[0]) / sum(w[2] for w in windows if w[0])
        off = sum(w[1] for w in windows if not w[0]) / sum(w[2] for w in windows if not w[0])
        return on / off

    rng = np.random.default_rng(0)
    boot = sorted(ratio([groups[i] for i in rng.integers(0, len(groups), len(groups))]) for _ in range(2000))
    on_windows = [w for g in groups for w in g if w[0]]
    ui_cpu = 1000 * sum(w[3] for w in on_windows) / sum(w[2] for w in on_windows)
    detail = (
        f"95% interval {boot[50]:.3f}–{boot[1949]:.3f} over {len(groups)} ABBA groups of 1 s windows; "
        f"UI thread {ui_cpu:.0f} ms CPU/s"
    )
    report("ui_overhead", ratio(groups), "x", ">=", 0.95, detail)


def ui_overhead_whole_runs(repeats: int, steps: int) -> None:
    """The first design, kept for comparison (``--whole-runs N``): N pairs of fresh processes,
    ``--headless`` vs the monitor, median of the per-pair ratios. Between runs this machine's speed
    drifts by ±10%, more than the effect measured."""
    rates: dict[str, list[float]] = {"tui": [], "headless": []}
    for _ in range(repeats):
        for mode in ("headless", "tui"):
            out = subprocess.run(
                [PY, str(ROOT / "bench" / "ui_run.py"), mode, str(steps)], capture_output=True, text=True, check=True
            )
            rates[mode].append(json.loads(out.stdout.strip().splitlines()[-1])["steps_per_s"])
    ratios = [t / h for t, h in zip(rates["tui"], rates["headless"], strict=True)]
    print(f"info: ui_overhead_whole_runs {statistics.median(ratios):.3g} x (per pair: "
          f"{', '.join(f'{r:.2f}' for r in ratios)})", flush=True)  # fmt: skip


# -- frame cost --------------------------------------------------------------------------------
def _chart_run(n_steps: int):
    """A run of ``n_steps`` (the same picture at every length) and a function that draws one frame of it:
    50 new steps, then both charts built from the history as the app builds them."""
    from lrwatch.app.charts import LossView, PreviewCache, loss_chart, lr_chart
    from lrwatch.charts.plot import render_rows
    from lrwatch.record.history import Ema, MetricHistory
    from lrwatch.schedule.timeline import Timeline

    k = max(n_steps // 50, 1)  # 50 epochs done of 100, SGDR cycles of 20 epochs
    timeline = Timeline.start("cosine-restarts:T_0=20", lr=0.1, steps_per_epoch=k, total_steps=2 * n_steps)
    history = MetricHistory()
    rng = np.random.default_rng(0)
    loss = 2 * np.exp(-np.arange(n_steps) / (n_steps / 3)) + 0.1 * rng.standard_normal(n_steps)
    lrs = timeline.lrs(np.arange(n_steps))
    for s in range(n_steps):
        history.append(s, s / k, lrs[s], loss[s])
        if (s + 1) % k == 0:
            history.append_epoch(s + 1, (s + 1) / k, {"val_loss": loss[s]})
    preview, view = PreviewCache(), LossView(Ema(0.9))
    width, height = 124, 23  # each chart at 160×48: the side column takes 36, the two charts share the height
    step = n_steps

    def frame() -> float:
        nonlocal step
        for _ in range(50):  # steady state: new steps arrive between frames
            history.append(step, step / k, lrs[-1], loss[-1])
            step += 1
        started = time.perf_counter()
        render_rows(lr_chart(history, timeline, step, width=width, height=height, log_y=False, ascii=False,
                             preview=preview))  # fmt: skip
        render_rows(loss_chart(history, view, timeline, step, width=width, height=height, log_y=False,
                               recent=False, ascii=False))  # fmt: skip
        return 1000 * (time.perf_counter() - started)

    frame()  # warm: the EMA of the whole history and the preview are built once
    return frame


def frame_cost(repeats: int) -> None:
    """Both charts' full redraw at 10⁶ steps, and ÷ the same at 10³: frames of the two runs alternate
    (5 each, then the other), so drift falls on both sides alike."""
    big, small = _chart_run(1_000_000), _chart_run(1_000)
    gc.collect()
    gc.freeze()  # as the app does once warm
    big_ms, small_ms, ratios = [], [], []
    for _ in range(6 * repeats):
        b = statistics.median(big() for _ in range(5))
        s = statistics.median(small() for _ in range(5))
        big_ms.append(b)
        small_ms.append(s)
        ratios.append(b / s)
    gc.unfreeze()
    report("frame_ms_1e6", statistics.median(big_ms), "ms", "<=", 10, "both charts, 124×23 each, at 160×48")
    detail = f"{statistics.median(small_ms):.1f} ms at 1e3 steps"
    report("frame_growth", statistics.median(ratios), "x", "<=", 1.3, detail)


# -- LR update cost ----------------------------------------------------------------------------
def lr_step_cost(repeats: int, n: int = 100_000) -> None:
    import torch

    from lrwatch.run.engine import Engine
    from lrwatch.schedule.timeline import Timeline

    ratios = []
    for _ in range(repeats):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        engine = Engine(opt, Timeline.start("cosine:T_max=100", lr=0.1, steps_per_epoch=100, total_steps=n))
        started = time.perf_counter()
        for s in range(n):
            engine._set_lr(s)
        ours = time.perf_counter() - started
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
        opt.step()  # once, after the scheduler exists, so it does not warn
        started = time.perf_counter()
        for _ in range(n):
            sched.step()
        theirs = time.perf_counter() - started
        ratios.append(ours / theirs)
    report("lr_step_cost", statistics.median(ratios), "x", "<=", 1.0, "Engine._set_lr vs CosineAnnealingLR.step()")


# -- switch latency ----------------------------------------------------------------------------
def switch_latency(trials: int = 30) -> None:
    """Steps between a switch reaching the engine (a key press's command) and the new schedule applied."""
    from lrwatch.protocol.commands import Switch
    from lrwatch.run.engine import Engine
    from lrwatch.schedule.timeline import Timeline

    class Groups:
        param_groups = [{"lr": 0.1}]

    engine = Engine(Groups(), Timeline.start("cosine", lr=0.1, steps_per_epoch=100, total_steps=10**9))
    done = threading.Event()

    def train(e: Engine) -> None:
        e.begin()
        while not done.is_set():
            time.sleep(0.0002)  # a step
            e.step(1.0)

    thread = threading.Thread(target=engine.run, args=(train,), daemon=True)
    thread.start()
    worst = 0
    for i in range(trials):
        time.sleep(0.01)
        submitted_after = engine.step_index  # steps completed when the key press arrives
        engine.submit(Switch("exp" if i % 2 else "step"))
        while len([e for e in engine.events_since(0) if e.kind == "switch"]) <= i:
            time.sleep(0.0005)
        applied = [e for e in engine.events_since(0) if e.kind == "switch"][i].step
        worst = max(worst, applied - submitted_after)
    done.set()
    thread.join(5)
    report("switch_latency_steps", worst, "steps", "<=", 1, f"worst of {trials}")


# -- memory ------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def history_memory() -> None:
    """RSS added by 10⁶ step rows appended one by one (as a run does), then by 10 metrics logged every step."""
    from lrwatch.record.history import MetricHistory

    warm = MetricHistory()  # the code paths run once first: their pages are not the history's memory
    for s in range(70_000):
        warm.append(s, s / 1000, 0.1, 1.0, {"m": 0.5} if s % 2 else None)
    warm.snapshot(100)
    del warm
    gc.collect()
    before = _rss_mb()
    history = MetricHistory()
    for s in range(1_000_000):
        history.append(s, s / 1000, 0.1, 1.0)
    len(history)  # the last rows join the columns
    gc.collect()
    report("history_mb_1e6", _rss_mb() - before, "MB", "<=", 16, f"{len(history):,} rows; MB = 2**20 bytes")
    del history
    gc.collect()
    before = _rss_mb()
    history = MetricHistory()
    names = [f"m{i}" for i in range(10)]
    for s in range(1_000_000):
        history.append(s, s / 1000, 0.1, 1.0, dict.fromkeys(names, 0.5))
    len(history)
    gc.collect()
    detail = f"{len(history):,} rows × {len(history.metric_names())} metrics, each its own series (8 B a point)"
    report("history_mb_1e6x10", _rss_mb() - before, "MB", "<=", 96, detail)


# -- the per-step cost of monitor.step -----------------------------------------------------------
def _alternate(a: Callable[[], None], b: Callable[[], None], seconds: float, chunk: int = 500) -> float:
    """Per-call time of ``a`` ÷ that of ``b``, chunks of ``chunk`` calls alternating (ABBA) for ``seconds``."""
    spent = [0.0, 0.0]
    calls = [0, 0]
    sides = (a, b)
    order = (0, 1, 1, 0)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for side in order:
            f = sides[side]
            started = time.perf_counter()
            for _ in range(chunk):
                f()
            spent[side] += time.perf_counter() - started
            calls[side] += chunk
    return (spent[0] / calls[0]) / (spent[1] / calls[1])


def step_tax(seconds: float) -> None:
    """The whole ``monitor.step(loss)`` (a 0-d CPU tensor loss; run directory written, as a run does) per step
    ÷ torch's ``CosineAnnealingLR.step()``, side by side in one process; then ``monitor.step(loss, 5 tensor
    metrics)`` ÷ ``monitor.step(loss)``."""
    import tempfile

    import torch

    import lrwatch
    from lrwatch.live.host import Host, using_host

    def monitor() -> Any:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        with using_host(Host(log=None, serve=False)):
            return lrwatch.watch(opt, steps_per_epoch=10**9, epochs=1, run_dir=tempfile.mkdtemp())

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    opt.step()  # once, after the scheduler exists, so it does not warn
    loss = torch.tensor(1.5)
    plain = monitor()
    tax = _alternate(lambda: plain.step(loss), sched.step, seconds)
    report("step_tax", tax, "x", "<=", 1.0, "monitor.step(0-d CPU tensor) ÷ CosineAnnealingLR.step()")
    metrics = {f"m{i}": torch.tensor(0.1 * i) for i in range(5)}
    with_metrics = monitor()
    ratio = _alternate(lambda: with_metrics.step(loss, **metrics), lambda: plain.step(loss), seconds)
    report("step_metrics_cost", ratio, "x", "<=", 2.0, "monitor.step(loss, 5 0-d tensor metrics) ÷ monitor.step(loss)")
    plain.close()
    with_metrics.close()


# -- a real terminal ---------------------------------------------------------------------------
def _spawn_in_pty(argv: list[str], cols: int, rows: int) -> tuple[subprocess.Popen, int]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    return proc, master


def _read_all(master: int, sink: list[tuple[float, int]], chunks: list[bytes] | None = None) -> None:
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            return
        if not data:
            return
        sink.append((time.monotonic(), len(data)))
        if chunks is not None:
            chunks.append(data)


def first_frame(repeats: int, tmp: Path) -> None:
    """``lrwatch demo`` start to the first plotted line ÷ ``python -c "import torch, textual"``."""
    ratios = []
    for i in range(repeats):
        started = time.monotonic()
        subprocess.run([PY, "-c", "import torch, textual"], check=True)
        baseline = time.monotonic() - started
        argv = [PY, "-m", "lrwatch.cli", "demo", "--run-dir", str(tmp / f"first{i}")]
        started = time.monotonic()
        proc, master = _spawn_in_pty(argv, 120, 40)
        sink: list[tuple[float, int]] = []
        chunks: list[bytes] = []
        reader = threading.Thread(target=_read_all, args=(master, sink, chunks), daemon=True)
        reader.start()
        seen = None
        while seen is None and time.monotonic() - started < 60:
            text = b"".join(chunks).decode("utf-8", errors="ignore")
            if any("\u2801" <= c <= "\u28ff" for c in text):  # braille: a line was drawn
                seen = time.monotonic() - started
            time.sleep(0.02)
        proc.terminate()
        proc.wait(20)
        os.close(master)
        ratios.append((seen or 60) / baseline)
    report("first_frame_s", statistics.median(ratios), "x", "<=", 1.0, "÷ python -c 'import torch, textual'")


def tty_bandwidth(tmp: Path, seconds: float = 10.0) -> None:
    """Bytes the monitor writes to a 120×40 terminal per second, at steady state."""
    argv = [PY, "-m", "lrwatch.cli", "demo", "--run-dir", str(tmp / "tty")]
    proc, master = _spawn_in_pty(argv, 120, 40)
    sink: list[tuple[float, int]] = []
    reader = threading.Thread(target=_read_all, args=(master, sink), daemon=True)
    reader.start()
    time.sleep(6)  # start-up and the first frames
    start = time.monotonic()
    time.sleep(seconds)
    end = time.monotonic()
    proc.terminate()
    proc.wait(20)
    os.close(master)
    total = sum(n for t, n in sink if start <= t < end)
    report("tty_bytes_per_s", total / (end - start) / 1000, "KB/s", "<=", 10, "120×40, default fps")


def live_figures(repeats: int, tmp: Path) -> None:
    import live

    seconds, detail = live.attach_first_frame(repeats, tmp, _spawn_in_pty, _read_all, 10**6, 10)
    report("attach_first_frame_s", seconds, "s", "<=", 1.5, f"10⁶ logged steps × 10 metrics, 120×40; {detail}")
    seconds, detail = live.attach_first_frame(repeats, tmp, _spawn_in_pty, _read_all, 10**7, 1)
    report("attach_first_frame_1e7_s", seconds, "s", "<=", 2.0, f"10⁷ logged steps × 1 metric, 120×40; {detail}")
    ratio, detail = live.attach_overhead(tmp)
    report("attach_overhead", ratio, "x", ">=", 0.97, detail)


def race_figures(repeats: int) -> None:
    import race

    race.race_restore_exact(report)
    race.race_overhead(report, repeats)


def ddp_sync_cost(tmp: Path, seconds: float = 15.0) -> None:
    """lrwatch's collective under DDP, per step, ÷ a training step of the demo model: two CPU ranks (gloo)
    of ``demo/ddp.py`` for ``seconds``, stopped by SIGTERM to torchrun (a stop at one sync step). Each rank
    times its exchanges; a step is (loop time − exchange time) ÷ steps. The worse rank is the figure."""
    import re
    import signal

    run_dir = tmp / "ddp"
    argv = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "demo" / "ddp.py")]
    argv += ["--epochs", "1", "--steps-per-epoch", str(10**9), "--sync-stats", "--run-dir", str(run_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LRWATCH_NO_SOCKET": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.csv").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(seconds)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    pattern = r"rank (\d): sync_seconds ([\d.]+) syncs (\d+) steps (\d+) loop_seconds ([\d.]+)"
    ranks = [(float(a), int(n), int(s), float(t)) for _, a, n, s, t in re.findall(pattern, out)]
    if len(ranks) != 2:
        raise RuntimeError(f"ddp_sync_cost: expected two ranks' figures, got:\n{out[-2000:]}")
    ratios = [a / (t - a) for a, _, _, t in ranks]  # (a / steps) ÷ ((t - a) / steps)
    a, n, steps, t = ranks[int(np.argmax(ratios))]
    detail = (
        f"{steps} steps in {t:.1f} s, {n} exchanges (every {steps / n:.1f} steps, {1e3 * a / n:.2f} ms each), "
        f"step {1e3 * (t - a) / steps:.2f} ms; ranks {ratios[0]:.4f} / {ratios[1]:.4f}"
    )
    report("ddp_sync_cost", max(ratios), "x", "<=", 0.02, detail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=6.0, help="each step_tax comparison's duration")
    parser.add_argument("--only", default="", help="comma-separated figures' functions to run (e.g. step_tax)")
    parser.add_argument("--ui-processes", type=int, default=2, help="demo runs for ui_overhead (~45 s each)")
    parser.add_argument("--whole-runs", type=int, default=0, help="also N pairs of whole runs, headless vs monitor")
    args = parser.parse_args()
    tmp = Path(subprocess.run(["mktemp", "-d"], capture_output=True, text=True).stdout.strip())
    started = time.monotonic()
    figures: list[tuple[str, Callable[[], None]]] = [
        ("lr_step_cost", lambda: lr_step_cost(args.repeats)),
        ("switch_latency", switch_latency),
        ("history_memory", history_memory),
        ("step_tax", lambda: step_tax(args.step_seconds)),
        ("frame_cost", lambda: frame_cost(args.repeats)),
        ("first_frame", lambda: first_frame(args.repeats, tmp)),
        ("tty_bandwidth", lambda: tty_bandwidth(tmp)),
        ("live_figures", lambda: live_figures(args.repeats, tmp)),
        ("ddp_sync_cost", lambda: ddp_sync_cost(tmp)),
        ("race_figures", lambda: race_figures(args.repeats)),
        ("ui_overhead", lambda: ui_overhead(args.ui_processes)),
    ]
    only = {name for name in args.only.split(",") if name}
    for name, figure in figures:
        if not only or name in only:
            figure()
    if args.whole_runs:
        ui_overhead_whole_runs(args.whole_runs, 4000)
    print(f"\n{'figure':<22}{'value':>12}  {'target':<10} result   detail")
    for name, value, unit, op, target, detail in RESULTS:
        ok = value >= target if op == ">=" else value <= target
        print(f"{name:<22}{value:>9.3g} {unit:<3} {op} {target:<7g} {'PASS' if ok else 'MISS':<8} {detail}")
    print(f"\n(bench took {time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
