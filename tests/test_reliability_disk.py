"""A run survives its disk: a full tmpfs, a run directory it may not write, files planted in it (issue 24)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lrwatch.live.client import RunClient
from lrwatch.protocol.commands import Checkpoint, Stop
from lrwatch.record.rundir import read_metric_rows

CLI = [sys.executable, "-m", "lrwatch.cli"]
NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

TRAIN = """
import sys, time, torch, lrwatch
torch.manual_seed(0)
model = torch.nn.Linear(256, 256)          # a checkpoint of about 0.5 MB
opt = torch.optim.SGD(model.parameters(), lr=0.1)
monitor = lrwatch.watch(opt, model=model, run_dir=sys.argv[1], steps_per_epoch=None, total_steps=10**7,
                        schedule="constant")
x = torch.randn(4, 256)
while True:
    loss = model(x).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    if not monitor.step(loss):
        break
    time.sleep(0.003)
monitor.close()
"""


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def env(tmp: Path) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TMPDIR": str(tmp)}


def start(script: Path, run_dir: Path, tmp: Path, prefix: list[str] = ()) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, str(script), str(run_dir)], env=env(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def send(run_dir: Path, tmp: Path, *words: str, prefix: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *CLI, "send", str(run_dir), *words], capture_output=True, text=True,
                          timeout=60, env=env(tmp))  # fmt: skip


def events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]


def step_of(run_dir: Path) -> int:
    record = json.loads((run_dir / "live.json").read_text())
    client = RunClient(record["socket"], kind="ls", timeout=5.0)
    try:
        return client.status().step
    finally:
        client.close()


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` up to its last byte."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    return filler


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(run_dir: Path) -> list[str]:
    return [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_full_disk_refuses_the_checkpoint_in_words_keeps_rows_and_a_sigterm_still_stops_cleanly(
    tmp_path: Path,
) -> None:
    """Full once: ``send checkpoint`` exits 1 with the words, the last checkpoint intact, no temporary file,
    training goes on and its rows wait (one warning) until there is room. Full again: SIGTERM stops the run
    cleanly and says that the stop's checkpoint was not saved."""
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    with tmpfs(tmp_path / "disk") as disk:
        run_dir = disk / "run"
        proc = start(script, run_dir, tmp_path)
        try:
            wait_for(lambda: (run_dir / "live.json").exists() and (run_dir / "events.jsonl").exists(), "the run")
            assert command(run_dir, Checkpoint())["event"] == "checkpoint"
            good = digest(run_dir / "checkpoint.pt")
            filler = fill(disk)
            refused = send(run_dir, tmp_path, "checkpoint")
            assert refused.returncode == 1, refused.stdout + refused.stderr
            event = json.loads(refused.stdout)
            assert event["event"] == "rejected"
            assert f"no space left on device: {run_dir / 'checkpoint.pt'}" in event["reason"]
            assert digest(run_dir / "checkpoint.pt") == good and leftovers(run_dir) == []
            lines = collect(proc.stderr)
            wait_for(lambda: any("rows and events wait in memory" in line for line in lines), "the rows to wait")
            at = step_of(run_dir)
            wait_for(lambda: step_of(run_dir) > at + 20, "training to go on on a full disk")
            filler.unlink()
            wait_for(lambda: any("written again" in e.get("message", "") for e in events(run_dir)), "the backlog")
            warnings = [e["message"] for e in events(run_dir) if e["event"] == "warning"]
            assert sum("no space left on device" in w for w in warnings) == 1, warnings  # one, not one per step
            steps = [row[0] for row in read_metric_rows(run_dir / "metrics.csv") if len(row) == 4]
            assert steps == list(range(len(steps))) and len(steps) > at + 20  # every row, once, in order
            fill(disk)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        finally:
            proc.kill()
            proc.wait()
        wait_for(lambda: lines[-1:] == [None], "the run's stderr to end")
        err = "".join(lines[:-1])
        assert proc.returncode == 0, err  # stopped, not an error
        assert "stop checkpoint was not saved: no space left on device" in err
        assert "Traceback" not in err and leftovers(run_dir) == []
        assert digest(run_dir / "checkpoint.pt") == good


def collect(stream: Any) -> list:
    """The lines of ``stream`` as they come, read by a thread; ``None`` after the last."""
    lines: list = []

    def read() -> None:
        lines.extend(iter(stream.readline, ""))
        lines.append(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def command(run_dir: Path, cmd: Any) -> dict:
    """``cmd`` sent to the run as ``lrwatch send`` would, without starting an interpreter; the event it led to."""
    record = json.loads((run_dir / "live.json").read_text())
    client = RunClient(record["socket"], kind="send", timeout=30.0)
    try:
        return client.command(cmd)["event"]
    finally:
        client.close()


def as_nobody(fn: Callable[[], Any]) -> Any:
    """``fn()`` in a forked child running as uid 65534 (its JSON result), as another user's tool would."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write, json.dumps(fn()).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory another uid can reach (pytest's tmp_path lies under a 0700 directory of root's)."""
    path = Path(tempfile.mkdtemp(prefix="lrwatch-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_read_only_run_directory_refuses_the_checkpoint_with_permission_denied(shared: Path) -> None:
    """The run trains as another uid (root ignores permissions) in a directory it may no longer write."""
    script = shared / "train.py"
    script.write_text(TRAIN)
    run_dir = shared / "run"
    run_dir.mkdir()
    os.chown(run_dir, 65534, 65534)
    sockets = shared / "sockets"
    sockets.mkdir()
    sockets.chmod(0o1777)
    os.environ["TMPDIR"], saved = str(sockets), os.environ.get("TMPDIR")  # the forked clients' socket directory
    proc = start(script, run_dir, sockets, prefix=NOBODY)
    try:
        wait_for(lambda: (run_dir / "events.jsonl").exists() and (run_dir / "live.json").exists(), "the run")
        run_dir.chmod(0o555)
        refused = as_nobody(lambda: command(run_dir, Checkpoint()))
        assert refused["event"] == "rejected"
        assert f"permission denied: {run_dir / 'checkpoint.pt'}" in refused["reason"]
        at = as_nobody(lambda: step_of(run_dir))
        wait_for(lambda: as_nobody(lambda: step_of(run_dir)) > at + 20, "training to go on")
        assert as_nobody(lambda: command(run_dir, Stop("test")))["event"] == "stop"
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
        run_dir.chmod(0o755)
        if saved is None:
            del os.environ["TMPDIR"]
        else:
            os.environ["TMPDIR"] = saved
    log = events(run_dir)
    assert log[-1]["status"] == "stopped" and leftovers(run_dir) == []
    assert any("stop checkpoint was not saved: permission denied" in e.get("message", "") for e in log)


def test_planted_symlinks_are_replaced_never_followed(tmp_path: Path) -> None:
    """A link planted at every name lrwatch writes (and at the old fixed temporary names) leaves its target
    untouched; the run's files are regular files."""
    from lrwatch.record.rundir import RunWriter
    from lrwatch.record.safefile import replace_text

    target = tmp_path / "precious"
    target.write_text("keep me\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    names = ["checkpoint.tmp", "checkpoint.pt", "metrics.csv.tmp", "run.json.tmp", "run.json", "live.json.tmp",
             "lrwatch_state.json.tmp", "lr_find.tmp"]  # fmt: skip
    for name in names:
        (run_dir / name).symlink_to(target)
    replace_text(run_dir / "checkpoint.pt", "weights")
    writer = RunWriter(run_dir)
    writer.write_run_info({"config": {}})
    writer.add_step(0, 0.0, 0.1, 1.0)
    writer.close()
    RunWriter(run_dir, resume_at=1).close()  # the resume's rewrite of metrics.csv
    assert target.read_text() == "keep me\n"
    for name in ("checkpoint.pt", "run.json", "metrics.csv", "events.jsonl"):
        assert (run_dir / name).is_file() and not (run_dir / name).is_symlink()
    (run_dir / "metrics.csv").unlink()
    (run_dir / "metrics.csv").symlink_to(target)  # planted after the header was written: never appended through
    with pytest.raises(OSError, match="symbolic link"):
        from lrwatch.record.safefile import open_append

        open_append(run_dir / "metrics.csv")
    assert target.read_text() == "keep me\n"


SAVING = """
import sys, torch, lrwatch
model = torch.nn.Linear(1024, 2048)          # an 8 MB checkpoint: a save takes a while
opt = torch.optim.SGD(model.parameters(), lr=0.1)
monitor = lrwatch.watch(opt, model=model, run_dir=sys.argv[1], steps_per_epoch=None, total_steps=10**6)
while True:
    opt.step()
    monitor.step(0.0)
    monitor.checkpoint()                      # saving, again and again
"""


def test_kill_9_in_the_middle_of_saves_leaves_no_temporary_file_and_a_whole_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "saving.py"
    script.write_text(SAVING)
    run_dir = tmp_path / "run"
    proc = start(script, run_dir, tmp_path)
    try:
        wait_for(lambda: (run_dir / "checkpoint.pt").exists(), "a first checkpoint", 60)
        time.sleep(0.3)  # mid-save, most likely: it saves all the time
    finally:
        proc.kill()
        proc.wait()
    assert [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] == []
    import torch

    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]["weight"].shape == (2048, 1024)
