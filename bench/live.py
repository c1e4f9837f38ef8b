"""Bench figures of live runs: ``attach_first_frame_s`` and ``attach_overhead`` (called by ``bench/run.py``).

``python bench/live.py serve RUN_DIR`` is the helper process: a run whose history already holds 10⁶
logged steps, serving its socket and stepping slowly until SIGTERM.
"""

from __future__ import annotations

import json
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
LOGGED = 1_000_000


def serve_long_run(run_dir: str, logged: int = LOGGED, metrics: int = 0) -> None:
    """A served run with ``logged`` steps of history and ``metrics`` metrics logged at every one of them
    (built at once, not trained), then a step every 2 ms."""
    sys.path.insert(0, str(ROOT))
    from lrwatch.live.host import serve
    from lrwatch.protocol.commands import Stop
    from lrwatch.run.engine import Engine
    from lrwatch.schedule.timeline import Timeline
    from tests.conftest import FakeOptimizer

    k = 1000
    timeline = Timeline.start("cosine-restarts:T_0=200", lr=0.1, steps_per_epoch=k, total_steps=2 * logged)
    engine = Engine(FakeOptimizer(0.1), timeline, run_dir=run_dir, start_step=logged)
    steps = np.arange(logged)
    rng = np.random.default_rng(0)
    engine.history.extend(steps, steps / k, timeline.lrs(steps), 2 * np.exp(-steps / 3e5) + 0.1 * rng.random(logged))
    names = [f"metric_{i}" for i in range(metrics)]
    for i, name in enumerate(names):
        engine.history.extend_metric(name, steps, 1.0 + i + 0.1 * rng.random(logged))
    for epoch in range(1, logged // k + 1):
        engine.history.append_epoch(epoch * k, float(epoch), {"val_loss": 1.0 / epoch})
    serve(engine)
    engine.begin()
    signal.signal(signal.SIGTERM, lambda *_: engine.submit(Stop("SIGTERM")))
    while engine.step(1.0, metrics=dict.fromkeys(names, 1.0)):
        time.sleep(0.002)
    engine.finish()


def attach_first_frame(
    repeats: int, tmp: Path, spawn_in_pty, read_all, logged: int = LOGGED, metrics: int = 0
) -> tuple[float, str]:
    """Seconds from starting ``lrwatch attach`` (interpreter included) to the first drawn chart, ``logged``
    steps with ``metrics`` metrics each."""
    run_dir = tmp / f"long-{logged}-{metrics}"
    server = subprocess.Popen([PY, str(Path(__file__)), "serve", str(run_dir), str(logged), str(metrics)])
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "live.json").exists():
            if time.monotonic() > deadline:
                raise SystemExit("the 10⁶-step run never served its socket")
            time.sleep(0.1)
        times = []
        for _ in range(repeats):
            started = time.monotonic()
            proc, master = spawn_in_pty([PY, "-m", "lrwatch.cli", "attach", str(run_dir)], 120, 40)
            chunks: list[bytes] = []
            threading.Thread(target=read_all, args=(master, [], chunks), daemon=True).start()
            seen = None
            while seen is None and time.monotonic() - started < 30:
                if any("\u2801" <= c <= "\u28ff" for c in b"".join(chunks).decode("utf-8", errors="ignore")):
                    seen = time.monotonic() - started
                time.sleep(0.01)
            proc.terminate()
            proc.wait(10)
            times.append(seen or 30.0)
    finally:
        server.terminate()
        server.wait(20)
    return statistics.median(times), f"median of {repeats}: {', '.join(f'{t:.2f}' for t in times)} s"


def _subscriber(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    from lrwatch.protocol.wire import VERSION

    sock.sendall(b'{"type":"hello","version":%d,"client":"monitor"}\n{"type":"subscribe"}\n' % VERSION)
    return sock


def _drain(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(1 << 20):
                return
        except TimeoutError:
            continue
        except OSError:
            return


def attach_overhead(tmp: Path, groups: int = 5, window: float = 2.0) -> tuple[float, str]:
    """Training steps/s of a detached demo with two subscribed clients ÷ with none, ABBA 2 s windows."""
    from lrwatch.live.client import RunClient

    run_dir = tmp / "overhead"
    subprocess.run([PY, "-m", "lrwatch.cli", "demo", "--detach", "--epochs", "1000", "--run-dir", str(run_dir)],
                   check=True, capture_output=True)  # fmt: skip
    while not (run_dir / "live.json").exists():
        time.sleep(0.1)
    record = json.loads((run_dir / "live.json").read_text())
    probe = RunClient(record["socket"], kind="bench")
    time.sleep(5)  # past start-up
    on = off = 0.0
    on_s = off_s = 0.0
    per_group = []
    try:
        for _ in range(groups):
            rates = {}
            for clients in (2, 0, 0, 2):
                stop = threading.Event()
                socks = [_subscriber(record["socket"]) for _ in range(clients)]
                threads = [threading.Thread(target=_drain, args=(s, stop), daemon=True) for s in socks]
                for t in threads:
                    t.start()
                step, started = probe.status().step, time.monotonic()
                time.sleep(window)
                steps, seconds = probe.status().step - step, time.monotonic() - started
                stop.set()
                for s in socks:
                    s.close()
                if clients:
                    on, on_s = on + steps, on_s + seconds
                else:
                    off, off_s = off + steps, off_s + seconds
                rates.setdefault(clients, []).append(steps / seconds)
            per_group.append(statistics.mean(rates[2]) / statistics.mean(rates[0]))
    finally:
        probe.send({"type": "command", "id": 1, "command": {"command": "stop", "reason": "bench"}})
        probe.close()
    detail = f"per ABBA group: {', '.join(f'{r:.3f}' for r in per_group)}; clients in this process, draining"
    return (on / on_s) / (off / off_s), detail


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve_long_run(sys.argv[2], *(int(a) for a in sys.argv[3:5]))
