"""The first seconds of a run, as a user at a terminal meets them: keys typed before the run answers are
kept and applied in order, ``q`` and SIGTERM cancel a run that has not answered, and the first frame
draws the schedule ahead from the command line, before the run process has imported torch."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
from textual.widgets import Static

from lrwatch.app import LRWatchApp
from lrwatch.app.early import action_label
from lrwatch.demo import DemoConfig, planned_timeline
from lrwatch.live.client import RemoteRunSource
from lrwatch.record.rundir import read_metric_rows
from tests.conftest import app_wait_for
from tests.test_live import CLI, events, exited_within, in_pty, lrwatch, wait_for

LONG = ["--epochs", "2000", "--steps-per-epoch", "100"]


def drain(master: int, seen: list[bytes]) -> threading.Thread:
    """Read the pty as a terminal would, so the monitor never blocks on a full one."""

    def run() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            seen.append(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def no_process_of(run_dir: Path) -> bool:
    """No process whose command line names ``run_dir`` is left (the run, its monitor)."""
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(run_dir).encode() in cmdline and b"lrwatch" in cmdline:
                return False
    return True


def test_keys_typed_before_the_monitor_draws_are_applied_in_order(tmp_path: Path) -> None:
    """``e`` (switch to exp) then space (pause), typed the moment the command starts: the run switches, then
    pauses, in that order; ``q`` then stops it."""
    run_dir = tmp_path / "run"
    pid, master = in_pty([*CLI, "demo", *LONG, "--run-dir", str(run_dir)], cols=80, rows=24)
    os.write(master, b"e ")  # before Python has even imported Textual
    seen: list[bytes] = []
    drain(master, seen)
    wait_for(lambda: any(e["event"] == "pause" for e in events(run_dir)), "the waiting keys to reach the run", 90)
    kinds = [e["event"] for e in events(run_dir) if e["event"] in ("switch", "pause")]
    assert kinds[:2] == ["switch", "pause"]
    switch = next(e for e in events(run_dir) if e["event"] == "switch")
    assert switch["spec"].startswith("exp:")
    os.write(master, b"q")
    assert exited_within(pid, 30.0) == 0
    os.close(master)
    wait_for(lambda: no_process_of(run_dir), "the run to end", 10)


def test_q_before_the_run_answers_cancels_its_start_and_leaves_nothing_running(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pid, master = in_pty([*CLI, "demo", *LONG, "--run-dir", str(run_dir)], cols=80, rows=24)
    seen: list[bytes] = []
    drain(master, seen)
    wait_for(lambda: "waiting for" in b"".join(seen).decode(errors="ignore"), "the first frame", 60)
    assert not any(e["event"] == "step" for e in events(run_dir))
    os.write(master, b"q")
    assert exited_within(pid, 30.0) == 0
    os.close(master)
    wait_for(lambda: no_process_of(run_dir), "the run to be cancelled", 10)
    assert not (run_dir / "live.json").exists()
    assert "before the first optimizer step" in (run_dir / "lrwatch.log").read_text()


def test_sigterm_to_the_monitor_before_the_run_answers_ends_the_run_too(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    pid, master = in_pty([*CLI, "demo", *LONG, "--run-dir", str(run_dir)], cols=80, rows=24)
    seen: list[bytes] = []
    drain(master, seen)
    wait_for(lambda: (run_dir / "lrwatch.log").exists(), "the run process", 60)
    os.kill(pid, signal.SIGTERM)
    assert exited_within(pid, 10.0) is not None
    os.close(master)
    wait_for(lambda: no_process_of(run_dir), "the run to be cancelled", 10)


def test_the_planned_timeline_is_the_one_the_run_applies(tmp_path: Path) -> None:
    """What the monitor draws before the run answers is, LR for LR, what the run then applies."""
    run_dir = tmp_path / "run"
    argv = ["--epochs", "3", "--steps-per-epoch", "20", "--lr", "0.03", "--schedule", "cosine"]
    argv += ["--switch", "1:exp:gamma=0.5", "--switch", "50steps:step:step_size=1"]
    out = lrwatch("demo", "--headless", *argv, "--run-dir", str(run_dir), timeout=120)
    assert out.returncode == 0, out.stderr
    lrs = np.array([float(row[2]) for row in read_metric_rows(run_dir / "metrics.csv") if len(row) == 4])
    switches = ("1:exp:gamma=0.5", "50steps:step:step_size=1")
    config = DemoConfig(epochs=3, steps_per_epoch=20, lr=0.03, schedule="cosine", switches=switches)
    planned = planned_timeline(config).lrs(range(len(lrs)))
    assert len(lrs) == 60
    np.testing.assert_allclose(lrs, planned, rtol=1e-12, atol=0)


def test_action_labels() -> None:
    assert action_label("switch('exp')") == "switch exp"
    assert action_label("pause") == "pause"
    assert action_label("nudge(True)") == "nudge True"


async def test_the_first_frame_draws_the_schedule_ahead_and_lists_the_keys_waiting() -> None:
    """A run that has not answered (its socket never appears): the LR chart shows the planned schedule, the
    run panel lists the keys pressed meanwhile; q cancels."""
    cancelled: list[bool] = []
    plan = planned_timeline(DemoConfig(epochs=10, steps_per_epoch=50))
    source = RemoteRunSource(lambda: None, owner=True, provisional=plan, cancel=lambda: cancelled.append(True))
    app = LRWatchApp.attached(source.start(), owner=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await app_wait_for(lambda: app._drawn.get("provisional") is not None, pilot)
        lr_chart = app.monitor_screen.query_one("#lr-chart").text
        assert sum("\u2801" <= c <= "\u28ff" for c in lr_chart) > 30  # the cosine ahead, in braille
        await pilot.press("c", "space", "k")
        assert app.waiting_keys == ["switch('cosine')", "pause", "checkpoint"]
        status = app.monitor_screen.query_one("#status", Static)
        assert "3 keys waiting for the run" in str(status.render())
        await pilot.press("q")
        await pilot.pause()
    assert cancelled == [True] and source.cancelled
