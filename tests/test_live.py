"""Live runs as users meet them: detached, attached from real ptys that vanish, steered by ``lrwatch send``."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import numpy as np
import pytest

from lrwatch.app import LRWatchApp
from lrwatch.live.client import RemoteRunSource
from lrwatch.live.launch import read_only_source
from lrwatch.protocol.commands import Stop
from lrwatch.record.rundir import read_metric_rows
from tests.conftest import app_wait_for
from tests.test_wire import TrainingRun

CLI = [sys.executable, "-m", "lrwatch.cli"]
ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm-256color"}


def lrwatch(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def run_pid(run_dir: Path) -> int:
    return json.loads((run_dir / "live.json").read_text())["pid"]


def exited_within(pid: int, seconds: float) -> int | None:
    """The exit status of our child ``pid`` if it ends within ``seconds``, else ``None`` (and it is killed)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def in_pty(argv: list[str], cols: int = 100, rows: int = 30) -> tuple[int, int]:
    """``argv`` in a new pty (it becomes the session leader with the pty as its terminal): ``(pid, master)``."""
    pid, master = pty.fork()
    if pid == 0:
        os.execve(argv[0], argv, ENV)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    return pid, master


def read_until(master: int, needle: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        assert time.monotonic() < deadline, f"never saw {needle!r}; got {seen[-400:]!r}"
        import select

        if select.select([master], [], [], 0.2)[0]:
            try:
                seen += os.read(master, 65536)
            except OSError:
                break
    return seen


def detached_demo(run_dir: Path) -> tuple[subprocess.CompletedProcess, float]:
    """``lrwatch demo --detach`` long enough to outlive a test (2000 epochs of 100 steps), serving once this
    returns: the command's output (the run dir, the attach line) and the seconds it took."""
    started = time.monotonic()
    out = lrwatch("demo", "--detach", "--epochs", "2000", "--steps-per-epoch", "100", "--run-dir", str(run_dir))
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr
    wait_for(lambda: (run_dir / "live.json").exists() and len(events(run_dir)) > 0, "the run to serve")
    return out, took


@pytest.fixture(scope="module")
def detached(tmp_path_factory: pytest.TempPathFactory):
    """One demo run in the background for the whole module, long enough to outlive it; stopped at the end."""
    run_dir = tmp_path_factory.mktemp("live") / "run"
    out, took = detached_demo(run_dir)
    assert f"lrwatch attach {run_dir}" in out.stdout and took < 6.0  # about 1 s idle
    yield run_dir
    if (run_dir / "live.json").exists():
        os.kill(run_pid(run_dir), signal.SIGTERM)
        wait_for(lambda: not (run_dir / "live.json").exists(), "the run to end", 10)


def test_ls_lists_the_run_and_send_answers_with_exit_statuses(detached: Path) -> None:
    listed = json.loads(lrwatch("ls", "--json").stdout)
    (row,) = [r for r in listed if r["run_dir"] == str(detached.resolve())]
    assert row["pid"] == run_pid(detached) and row["state"] == "running" and row["step"] > 0
    assert Path(row["socket"]).is_absolute() and row["clients"] == 0
    ok = lrwatch("send", str(detached), "switch", "exp:gamma=0.9")
    assert ok.returncode == 0 and json.loads(ok.stdout)["event"] == "switch", ok
    refused = lrwatch("send", str(detached), "switch", "cosine:T_max=-1")
    assert refused.returncode == 1 and json.loads(refused.stdout)["event"] == "rejected"
    assert "T_max" in json.loads(refused.stdout)["reason"]
    assert lrwatch("send", str(detached), "edit", "gamma=0.95").returncode == 0
    assert lrwatch("send", str(detached), "warp", "9").returncode == 2
    assert lrwatch("send", str(detached), "edit", "gamma").returncode == 2
    assert lrwatch("send", str(detached / "nowhere"), "pause").returncode == 3
    assert lrwatch("send", str(detached), "checkpoint").returncode == 0
    assert (detached / "checkpoint.pt").exists()


def test_attached_monitors_die_with_their_pty_twenty_times_and_the_run_goes_on(detached: Path) -> None:
    """The pty closed under ``lrwatch attach``: half the time the monitor is the session leader (SIGHUP),
    half the time a shell is (the monitor only sees EIO, the case that hung Textual for ever)."""
    attach = [*CLI, "attach", str(detached)]
    hung = []
    for i in range(20):
        argv = attach if i % 2 == 0 else ["/bin/bash", "-c", " ".join(attach) + "; true"]
        pid, master = in_pty(argv)
        read_until(master, b"learning rate")
        os.close(master)  # the terminal is gone: an SSH drop, a closed tmux window
        if exited_within(pid, 5.0) is None:
            hung.append(i)
    assert hung == []
    assert json.loads(lrwatch("send", str(detached), "resume").stdout)["event"] in ("resume", "rejected")
    status = [r for r in json.loads(lrwatch("ls", "--json").stdout) if r["run_dir"] == str(detached.resolve())]
    assert status[0]["state"] in ("running", "paused") and status[0]["clients"] == 0


def test_a_client_killed_mid_stream_and_a_second_attach_see_the_rows_on_disk(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = lrwatch("demo", "--detach", "--epochs", "300", "--steps-per-epoch", "100", "--run-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    wait_for(lambda: (run_dir / "live.json").exists(), "the run to serve")
    mirror = (
        "import sys, time, numpy as np; from lrwatch.live.client import RemoteRunSource; "
        "from lrwatch.live.sockets import record_of_run_dir as r; "
        "s = RemoteRunSource.of_path(r(sys.argv[1]).socket).start(); s.ready.wait(30); "
        "print('ready', flush=True); s.closed.wait(120); h = s.history; "
        "np.savez(sys.argv[2], step=h.column('step'), lr=h.column('lr'), loss=h.column('loss'))"
    )
    first = subprocess.Popen([sys.executable, "-c", mirror, str(run_dir), str(tmp_path / "a.npz")],
                             stdout=subprocess.PIPE, env=ENV)  # fmt: skip
    assert first.stdout.readline().strip() == b"ready"
    time.sleep(0.7)
    first.kill()  # mid-stream
    first.wait()
    second = subprocess.Popen([sys.executable, "-c", mirror, str(run_dir), str(tmp_path / "b.npz")],
                              stdout=subprocess.PIPE, env=ENV)  # fmt: skip
    assert second.stdout.readline().strip() == b"ready"
    time.sleep(0.5)
    assert lrwatch("send", str(run_dir), "stop").returncode == 0
    assert second.wait(60) == 0
    got = np.load(tmp_path / "b.npz")
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open()) if r["loss"]]
    assert len(rows) == len(got["step"]) > 0
    assert got["step"].tolist() == [int(r["step"]) for r in rows]
    assert [repr(float(v)) for v in got["lr"]] == [r["lr"] for r in rows]
    assert [repr(float(v)) for v in got["loss"]] == [r["loss"] for r in rows]


def test_the_monitor_that_started_the_run_leaves_with_its_pty_and_sigterm_ends_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pid, master = in_pty([*CLI, "demo", "--epochs", "2000", "--steps-per-epoch", "100", "--run-dir", str(run_dir)])
    read_until(master, b"running")
    wait_for(lambda: (run_dir / "live.json").exists(), "the run to serve")
    trainer = run_pid(run_dir)
    os.close(master)
    assert exited_within(pid, 5.0) is not None
    step = json.loads(lrwatch("ls", "--json").stdout)
    assert any(r["pid"] == trainer and r["state"] == "running" for r in step)  # it trains on
    os.kill(trainer, signal.SIGTERM)
    wait_for(lambda: not (run_dir / "live.json").exists(), "SIGTERM to end the run", 5.0)
    kinds = [e["event"] for e in events(run_dir)]
    assert kinds[-3:] == ["stop", "checkpoint", "finish"] and events(run_dir)[-1]["status"] == "stopped"


def test_headless_in_a_pty_that_vanishes_keeps_training_and_prints_never_raise(tmp_path: Path) -> None:
    """A user's loop that prints every step, under ``lrwatch run --headless``, whose pty is closed: its prints
    land in lrwatch.log from then on, training goes on; SIGTERM then ends it within seconds, flushed."""
    script = tmp_path / "train.py"
    script.write_text(
        "import torch, lrwatch\n"
        "model = torch.nn.Linear(2, 1); opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "monitor = lrwatch.watch(opt, model=model, epochs=10_000, steps_per_epoch=100)\n"
        "for i in range(1_000_000):\n"
        "    loss = model(torch.ones(1, 2)).pow(2).sum(); opt.zero_grad(); loss.backward(); opt.step()\n"
        "    print(f'step {i} loss {loss.item():.4f}')\n"
        "    if not monitor.step(loss):\n"
        "        break\n"
        "monitor.close()\n"
    )
    run_dir = tmp_path / "run"
    argv = ["/bin/bash", "-c", " ".join([*CLI, "run", "--headless", "--run-dir", str(run_dir), str(script)])]
    pid, master = in_pty(argv)
    read_until(master, b"step 50 ")
    os.close(master)
    wait_for(lambda: "the terminal is gone" in _log(run_dir), "output to move to lrwatch.log", 10)
    trainer = run_pid(run_dir)
    before = len(_log(run_dir))
    time.sleep(1.0)
    assert len(_log(run_dir)) > before and "Traceback" not in _log(run_dir)  # still printing, into the log
    os.kill(trainer, signal.SIGTERM)
    wait_for(lambda: events(run_dir) and events(run_dir)[-1]["event"] == "finish", "SIGTERM to end the run", 5.0)
    assert exited_within(pid, 5.0) is not None
    assert [e["event"] for e in events(run_dir)][-3:] == ["stop", "checkpoint", "finish"]


def _log(run_dir: Path) -> str:
    path = run_dir / "lrwatch.log"
    return path.read_text(errors="replace") if path.exists() else ""


async def test_an_attached_monitor_switches_asks_before_stopping_and_stops_on_y(tmp_path: Path) -> None:
    run = TrainingRun(tmp_path)
    source = RemoteRunSource.of_path(run.server.record.socket).start()
    app = LRWatchApp(source, None, owner=False, fps=4)
    try:
        async with app.run_test(size=(100, 30)) as pilot:
            await app_wait_for(lambda: source.connection == "live", pilot, timeout=30)
            await pilot.press("c")  # pressed as soon as the socket is live: it waits for the app's next frame
            segments = lambda: run.engine.timeline.segments  # noqa: E731
            await app_wait_for(lambda: segments()[-1].spec.kind == "cosine" and len(segments()) >= 2, pilot, timeout=30)
            await pilot.press("q")
            await pilot.pause(0.1)
            assert type(app.screen).__name__ == "ConfirmStop"
            await pilot.press("n")  # any other key: back, the run untouched
            await pilot.pause(0.2)
            assert type(app.screen).__name__ != "ConfirmStop" and run.engine.state == "running"
            await pilot.press("q")
            await pilot.pause(0.1)
            await pilot.press("y")
            await app_wait_for(lambda: not (app.is_running and run.engine.state == "running"), pilot, timeout=30)
        assert run.engine.stop_reason == "quit"
    finally:
        run.engine.submit(Stop("test"))
        run.thread.join(10)


def test_tmux_kill_session_under_the_monitor_leaves_no_process_behind_but_the_run(tmp_path: Path) -> None:
    from tests.test_tmux import Tmux

    run_dir = tmp_path / "run"
    tmux = Tmux(100, 30, " ".join([*CLI, "demo", "--epochs", "2000", "--steps-per-epoch", "100", "--run-dir",
                                   str(run_dir)]))  # fmt: skip
    try:
        wait_for(lambda: "running" in tmux.screen() and (run_dir / "live.json").exists(), "the monitor")
        monitors = subprocess.run(["pgrep", "-f", f"lrwatch.cli demo --epochs 2000.*{run_dir}"], capture_output=True,
                                  text=True).stdout.split()  # fmt: skip
        trainer = run_pid(run_dir)
    finally:
        tmux.kill()
    wait_for(lambda: not any(_alive(int(p)) for p in monitors if int(p) != trainer), "the monitor to exit", 5.0)
    assert monitors and _alive(trainer)
    os.kill(trainer, signal.SIGTERM)
    wait_for(lambda: not (run_dir / "live.json").exists(), "SIGTERM to end the run", 5.0)
    assert events(run_dir)[-1]["status"] == "stopped"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}/stat").exists() else "X"
    return status not in ("Z", "X")


def test_a_run_killed_with_9_leaves_a_stale_record_that_ls_flags_and_removes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    assert lrwatch("demo", "--detach", "--epochs", "500", "--steps-per-epoch", "100", "--run-dir",
                   str(run_dir)).returncode == 0  # fmt: skip
    wait_for(lambda: (run_dir / "live.json").exists(), "the run to serve")
    wait_for(lambda: any(len(r) == 4 for r in read_metric_rows(run_dir / "metrics.csv")), "a row on disk")
    record = json.loads((run_dir / "live.json").read_text())
    os.kill(record["pid"], signal.SIGKILL)
    wait_for(lambda: not _alive(record["pid"]), "the run to die")
    assert lrwatch("send", str(run_dir), "pause").returncode == 3  # nobody answers there
    last = [r for r in read_metric_rows(run_dir / "metrics.csv") if len(r) == 4][-1][0]
    gone = f"lost (process gone at step {last + 1:,})"  # steps done, as the run panel counts
    summary = lrwatch("view", "--summary", str(run_dir))
    assert summary.stdout.startswith(f"run: {gone}, "), summary.stdout  # a dead run looks dead, not running
    assert read_only_source(run_dir).status().state == "lost"  # what attach and view show (no offer to stop)
    listed = lrwatch("ls")
    assert listed.stdout.splitlines()[0].split() == ["RUN", "PID", "STATE", "STEP", "EPOCH", "SCHEDULE", "ATT"]
    assert f"{record['pid']}  lost" in listed.stdout and f"{gone}; its live record was removed" in listed.stdout
    assert not (run_dir / "live.json").exists() and not Path(record["socket"]).exists()
    assert not any(r["pid"] == record["pid"] for r in json.loads(lrwatch("ls", "--json").stdout))
    assert read_only_source(run_dir).status().state == "lost"  # the record gone, no finish: still lost
