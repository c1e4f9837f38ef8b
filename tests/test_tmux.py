"""The real terminal: ``lrwatch demo`` in tmux, a key press, the screen, ``q``, the run directory."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, width: int, height: int, command: str) -> None:
        self.name = f"lrwatch-test-{uuid.uuid4().hex[:8]}"
        # Under pytest COLUMNS=80 and LINES=24 are set, and they would override the pane's real size.
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        new = ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height)]
        subprocess.run([*new, f"unset COLUMNS LINES; {command}"], check=True, env=env)

    def screen(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True, text=True)
        return out.stdout

    def press(self, key: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, key], check=True)

    def wait(self, predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.screen()}")
            time.sleep(0.2)

    def kill(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def then_write(command: str, path: Path) -> str:
    """``command``'s output into ``path`` all at once (written aside, then renamed): a test that waits for
    ``path`` to exist never reads it half-written."""
    tmp = shlex.quote(f"{path}.tmp")
    return f"{command} > {tmp}; mv {tmp} {shlex.quote(str(path))}"


def read_events(run_dir: Path) -> list[dict]:
    path = run_dir / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("size", [(100, 30), (80, 24)])
def test_demo_in_a_real_terminal(tmp_path: Path, size: tuple[int, int]) -> None:
    run_dir, exit_file = tmp_path / "run", tmp_path / "exit"
    demo = [sys.executable, "-m", "lrwatch.cli", "demo", "--epochs", "20", "--steps-per-epoch", "200"]
    command = f"{shlex.join([*demo, '--run-dir', str(run_dir)])}; {then_write('echo $?', exit_file)}"
    tmux = Tmux(*size, command)
    try:
        tmux.wait(lambda: "learning rate" in tmux.screen() and "running" in tmux.screen(), "the monitor")
        tmux.wait(lambda: "⠀" in tmux.screen() or any("\u2801" <= c <= "\u28ff" for c in tmux.screen()), "a plot")
        screen = tmux.screen()
        assert all(len(line) <= size[0] for line in screen.splitlines())
        assert screen.splitlines()[0].endswith("╮") and len(screen.splitlines()[0]) == size[0]  # fills the width
        assert len(screen.splitlines()) == size[1] and "q quit" in screen.splitlines()[-1]
        assert "q quit" in screen
        for n, (key, kind) in enumerate([("c", "cosine"), ("e", "exp"), ("r", "cosine-restarts"), ("s", "step")], 1):
            tmux.press(key)
            switches = lambda: [e for e in read_events(run_dir) if e["event"] == "switch"]  # noqa: E731
            tmux.wait(lambda: len(switches()) == n, f"switch {n} in events.jsonl")  # noqa: B023
            spec = switches()[-1]["spec"]
            assert spec.startswith(f"{kind}:"), spec
            kind_part, first_param = spec.split(":", 1)[0] + ":", spec.split(":", 1)[1].split(",")[0]
            # the schedule panel may break after the kind (``exp:`` / ``gamma=0.7929``) at 80 columns
            tmux.wait(lambda: kind_part in tmux.screen() and first_param in tmux.screen(), f"{spec} on screen")  # noqa: B023
        tmux.press("q")
        tmux.wait(exit_file.exists, "the exit status")
        assert exit_file.read_text().strip() == "0"
        events = read_events(run_dir)
        assert events[-1]["event"] == "finish" and events[-1]["status"] == "stopped"
        rows = (run_dir / "metrics.csv").read_text().splitlines()
        assert len(rows) > 1 and rows[0].startswith("step,epoch,lr,loss")
    finally:
        tmux.kill()


def test_lrwatch_run_a_user_script_in_a_real_terminal(tmp_path: Path) -> None:
    run_dir, exit_file = tmp_path / "run", tmp_path / "exit"
    script = str(Path(__file__).resolve().parents[1] / "demo" / "torch_tutorial.py")
    command = [sys.executable, "-m", "lrwatch.cli", "run", "--run-dir", str(run_dir), script]
    tmux = Tmux(100, 30, f"{shlex.join(command)}; {then_write('echo $?', exit_file)}")
    try:
        tmux.wait(lambda: "finished" in tmux.screen() and "epoch 50.0/50" in tmux.screen(), "the finished run")
        tmux.wait(lambda: "CosineAnnealingLR(optimizer," in tmux.screen(), "the PyTorch line")
        tmux.press("q")
        tmux.wait(exit_file.exists, "the exit status")
        assert exit_file.read_text().strip() == "0"
        assert read_events(run_dir)[-1]["status"] == "finished"
    finally:
        tmux.kill()
