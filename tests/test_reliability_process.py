"""A run's process ends as asked: every stop signal flushed within 5 s, whatever its clients and threads do;
a ``--resume`` that cannot go on changes nothing (issue 24)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "lrwatch.cli"]

TRAIN = """
import sys, threading, time, torch, lrwatch
torch.manual_seed(0)
model = torch.nn.Linear(16, 4)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
monitor = lrwatch.watch(opt, model=model, run_dir=sys.argv[1], steps_per_epoch=50, epochs=10**5)
if "--hang" in sys.argv:  # a thread the script never ends: the interpreter would wait for it for ever
    threading.Thread(target=time.sleep, args=(3600,), daemon=False).start()
x = torch.randn(4, 16)
while True:
    loss = model(x).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if not monitor.step(loss):
        break
    time.sleep(0.001)
monitor.close()
"""


def env(tmp: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TMPDIR": str(tmp)}


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def stalled_subscriber(run_dir: Path) -> socket.socket:
    """A monitor that subscribes and never reads again (its receive buffer as small as the kernel allows)."""
    record = json.loads((run_dir / "live.json").read_text())
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(record["socket"])
    sock.sendall(b'{"type": "hello", "version": 1, "client": "monitor"}\n{"type": "subscribe"}\n')
    return sock


def exit_seconds(proc: subprocess.Popen, signum: int, limit: float = 20.0) -> float:
    started = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.wait(limit)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{signal.Signals(signum).name}: the process was still there after {limit} s")
    return time.monotonic() - started


@pytest.mark.parametrize("name", ["SIGTERM", "SIGQUIT", "SIGUSR1", "SIGHUP"])
def test_every_stop_signal_ends_a_script_flushed_within_5_s_despite_a_stalled_client_and_a_hung_thread(
    tmp_path: Path, name: str
) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), "--hang"], env=env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: (run_dir / "live.json").exists() and (run_dir / "events.jsonl").exists(), "the run")
        client = stalled_subscriber(run_dir)
        wait_for(lambda: len((run_dir / "metrics.csv").read_text().splitlines()) > 200, "rows")
        seconds = exit_seconds(proc, getattr(signal, name))
        client.close()
    finally:
        proc.kill()
        proc.wait()
    assert seconds < 5.0, f"{name}: {seconds:.1f} s to exit"
    assert proc.returncode == 0, proc.stderr.read()
    log = events(run_dir)
    assert [e["event"] for e in log[-3:]] == ["stop", "checkpoint", "finish"]
    assert log[-3]["reason"] == name and log[-1]["status"] == "stopped"
    assert not (run_dir / "live.json").exists()  # no stale record


def test_lrwatch_run_headless_stops_flushed_on_sigusr1(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([*CLI, "run", "--headless", str(script), "--", str(run_dir)], env=env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for(lambda: (run_dir / "events.jsonl").exists(), "the run")
        seconds = exit_seconds(proc, signal.SIGUSR1)
    finally:
        proc.kill()
        proc.wait()
    assert seconds < 5.0 and proc.returncode == 0, proc.stderr.read()
    assert [e["event"] for e in events(run_dir)[-3:]] == ["stop", "checkpoint", "finish"]


SAVER = """
import sys, torch, lrwatch
width = int(sys.argv[2]) if len(sys.argv) > 2 else 8
torch.manual_seed(0)
model = torch.nn.Linear(16, width)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
monitor = lrwatch.watch(opt, model=model, run_dir=sys.argv[1], steps_per_epoch=10, epochs=3)
x = torch.randn(4, 16)
for _ in range(monitor.start_step, 20):
    loss = model(x).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    monitor.step(loss)
monitor.checkpoint()
monitor.close()
"""


def digests(run_dir: Path) -> dict[str, str]:
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir())}


def test_a_resume_that_cannot_go_on_exits_2_with_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint of another model, one without RNG states, one whose step is past the run's end, one that
    pickles a global: each refused before anything is written, in one line naming what is wrong."""
    import torch

    from lrwatch.cli.main import main

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    run_dir = tmp_path / "run"
    assert main(["run", "--headless", str(script), "--", str(run_dir)]) == 0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    torch.save({**state, "rng": None}, run_dir / "no-rng.pt")
    torch.save({**state, "lrwatch": {**state["lrwatch"], "step": 10**9}}, run_dir / "far.pt")

    class Payload:
        def __reduce__(self):  # what a hostile checkpoint carries: never run
            return (os.system, ("touch " + str(tmp_path / "ran"),))

    torch.save({**state, "extra": {"x": Payload()}}, run_dir / "payload.pt")
    before = digests(run_dir)
    capsys.readouterr()
    cases = [
        ([str(run_dir)], ["32"], "it is a checkpoint of another model (weight is (8, 16) there, (32, 16) here)"),
        ([str(run_dir / "no-rng.pt")], [], "it holds no RNG state"),
        ([str(run_dir / "far.pt")], [], "its step 1,000,000,000 is past the run's end (30 steps)"),
        ([str(run_dir / "payload.pt")], [], "it holds posix.system, a global that weights_only=True refuses"),
    ]
    for resume, extra, words in cases:
        code = main(["run", "--headless", "--resume", *resume, str(script), "--", str(run_dir), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and words in err, (code, err)
        assert digests(run_dir) == before  # byte for byte
    assert not (tmp_path / "ran").exists()


def test_run_json_keeps_argv_with_secret_values_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lrwatch.run.engine import Engine
    from lrwatch.schedule.timeline import Timeline
    from tests.conftest import FakeOptimizer

    argv = ["train.py", "--hf-token", "hf_abc", "--lr", "0.1", "--wandb_api_key=xyz", "PASSWORD=hunter2",
            "--secret", "s3", "--keep", "best"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    engine = Engine(FakeOptimizer(0.1), Timeline.start("cosine", lr=0.1, steps_per_epoch=10, total_steps=100),
                    run_dir=tmp_path)  # fmt: skip
    engine.begin()
    engine.finish()
    kept = json.loads((tmp_path / "run.json").read_text())["argv"]
    assert kept == ["train.py", "--hf-token", "***", "--lr", "0.1", "--wandb_api_key=***", "PASSWORD=***",
                    "--secret", "***", "--keep", "best"]  # fmt: skip
    assert not any(secret in (tmp_path / "run.json").read_text() for secret in ("hf_abc", "xyz", "hunter2", "s3"))


def test_a_script_that_watches_but_never_steps_gets_no_false_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from lrwatch.cli.main import main

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    script = tmp_path / "idle.py"
    script.write_text("import sys, torch, lrwatch\nm = torch.nn.Linear(2, 2)\n"
                      "o = torch.optim.SGD(m.parameters(), lr=0.1)\n"
                      "lrwatch.watch(o, steps_per_epoch=None, run_dir=sys.argv[1]).close()\n")  # fmt: skip
    assert main(["run", "--headless", str(script), "--", str(tmp_path / "run")]) == 0
    assert "never called optimizer.step()" not in capsys.readouterr().err
