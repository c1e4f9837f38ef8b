"""DDP for real: ``torchrun --standalone --nproc_per_node=2`` on gloo (CPU), ``demo/ddp.py``.

Each rank prints ``rank R: steps N lr_sha256 X params_sha256 Y``; equal lines mean both ranks applied
the same LR at every step and ended with the same weights.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_live import CLI, ENV, events, lrwatch, run_pid, wait_for
from tests.test_tmux import Tmux

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
SMALL = ["--train-size", "4000", "--batch-size", "32", "--steps-per-epoch", "40"]
# The ranks share one pipe, so a line may start mid-line: no ``^``.
RANK_LINE = re.compile(r"rank (\d): steps (\d+) lr_sha256 ([0-9a-f]{64}) params_sha256 ([0-9a-f]{64})")
DDP_ENV = ENV | {"OMP_NUM_THREADS": "1"}


class Torchrun:
    """``demo/ddp.py`` on two ranks, in its own process group (killed whole at the end of a test)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*TORCHRUN, str(ROOT / "demo" / "ddp.py"), *SMALL, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=DDP_ENV | (env or {}),
            start_new_session=True,
        )
        self.output = ""

    def wait(self, timeout: float) -> int:
        self.output, _ = self.proc.communicate(timeout=timeout)
        return self.proc.returncode

    def ranks(self) -> dict[int, tuple[int, str, str]]:
        return {int(m[1]): (int(m[2]), m[3], m[4]) for m in RANK_LINE.finditer(self.output)}

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.communicate(timeout=10)


@pytest.fixture
def torchrun():
    started: list[Torchrun] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Torchrun:
        run = Torchrun(*args, env=env)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def metrics_lr_sha256(run_dir: Path) -> str:
    """The SHA-256 of the LR column rank 0 logged: what every rank's ``lr_sha256`` must equal."""
    with open(run_dir / "metrics.csv", newline="") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f) if row["loss"]]
    return hashlib.sha256(np.asarray(lrs, dtype=np.float64).tobytes()).hexdigest()


def agreeing_ranks(run: Torchrun) -> tuple[int, str, str]:
    ranks = run.ranks()
    assert sorted(ranks) == [0, 1], run.output[-3000:]
    assert ranks[0] == ranks[1], f"the ranks disagree: {ranks}"
    return ranks[0]


def test_a_scripted_and_a_sent_switch_land_on_both_ranks_at_the_same_step(tmp_path, torchrun):
    run_dir = tmp_path / "run"
    run = torchrun("--epochs", "500", "--switch", "1:exp:gamma=0.95", "--run-dir", str(run_dir))
    wait_for(lambda: (run_dir / "live.json").exists(), "rank 0's socket")
    wait_for(lambda: any(e["event"] == "switch" for e in events(run_dir)), "the scripted switch")
    sent = lrwatch("send", str(run_dir), "switch", "step:step_size=1,gamma=0.7")
    assert sent.returncode == 0, sent.stderr
    raced = lrwatch("send", str(run_dir), "race")  # refused alike on every rank (rank 0 answers), not forked on one
    assert raced.returncode == 1 and "not supported under DDP" in raced.stderr
    assert lrwatch("send", str(run_dir), "stop").returncode == 0
    assert run.wait(60) == 0, run.output[-3000:]
    steps, lr_hash, _ = agreeing_ranks(run)
    assert lr_hash == metrics_lr_sha256(run_dir)
    switches = [e for e in events(run_dir) if e["event"] == "switch"]
    assert [(s["step"], s["spec"]) for s in switches[:1]] == [(40, "exp:gamma=0.95")]
    assert switches[1]["spec"] == "step:step_size=1,gamma=0.7" and 40 < switches[1]["step"] <= steps
    assert [e["reason"] for e in events(run_dir) if e["event"] == "stop"] == ["send"]
    assert run.output.count("start at step 0") == 1 and run.output.count("stopped at step") == 1  # rank 0's lines only


def test_a_nan_on_one_rank_rolls_back_every_rank_alike(tmp_path, torchrun):
    run_dir = tmp_path / "run"
    nan = ("--on-divergence", "rollback", "--nan-at", "1:200")
    run = torchrun("--epochs", "10", "--run-dir", str(run_dir), *nan, env={"LRWATCH_ALL_RANKS": "1"})
    assert run.wait(120) == 0, run.output[-3000:]
    agreeing_ranks(run)
    assert "[rank 1]   rollback at step" in run.output  # asked to, rank 1 prints its lines too, marked
    (divergence,) = [e for e in events(run_dir) if e["event"] == "divergence"]
    assert divergence["rank"] == 1 and divergence["at_step"] == 200 and divergence["step"] >= 200
    (rollback,) = [e for e in events(run_dir) if e["event"] == "rollback"]
    assert 100 <= rollback["to_step"] < 200  # a snapshot both ranks took at one sync step


def test_sigterm_to_torchrun_stops_both_ranks_at_one_step_and_resume_restores_both(tmp_path, torchrun):
    args = ["--epochs", "30", "--switch", "2:cosine:T_max=10"]
    whole = torchrun(*args, "--run-dir", str(tmp_path / "whole"))
    assert whole.wait(180) == 0, whole.output[-3000:]
    run_dir = tmp_path / "stopped"
    run = torchrun(*args, "--run-dir", str(run_dir))
    wait_for(lambda: any(e["event"] == "epoch" for e in events(run_dir)), "an epoch")
    run.proc.send_signal(signal.SIGTERM)  # torchrun's agent passes it to both ranks
    run.wait(60)
    stopped_at, _, _ = agreeing_ranks(run)
    (stop,) = [e for e in events(run_dir) if e["event"] == "stop"]
    assert stop["reason"].startswith("SIGTERM on rank") and stop["step"] == stopped_at
    assert (run_dir / "checkpoint.pt").exists() and stopped_at < 1200

    resumed = torchrun(*args, "--resume", str(run_dir))
    assert resumed.wait(180) == 0, resumed.output[-3000:]
    _, _, params = agreeing_ranks(resumed)
    assert params == whole.ranks()[0][2]  # both ranks went on exactly as if never stopped


def test_a_killed_rank_stops_the_other_and_is_named(tmp_path, torchrun):
    run_dir = tmp_path / "run"
    run = torchrun("--epochs", "500", "--run-dir", str(run_dir))
    wait_for(lambda: (run_dir / "live.json").exists(), "rank 0's socket")
    rank0 = run_pid(run_dir)
    agent = int(Path(f"/proc/{rank0}/stat").read_text().rsplit(")", 1)[1].split()[1])
    (rank1,) = [int(p) for p in Path(f"/proc/{agent}/task/{agent}/children").read_text().split() if int(p) != rank0]
    time.sleep(0.5)
    killed = time.monotonic()
    os.kill(rank1, signal.SIGKILL)
    assert run.wait(60) != 0
    assert time.monotonic() - killed < 30
    errors = [e["message"] for e in events(run_dir) if e["event"] == "error"]
    assert len(errors) == 1 and f"rank 1 (pid {rank1}) left the run" in errors[0], errors
    assert events(run_dir)[-1]["event"] == "finish"


def test_a_rank_that_raises_is_named_with_its_error(tmp_path, torchrun):
    run_dir = tmp_path / "run"
    run = torchrun("--epochs", "50", "--run-dir", str(run_dir), "--fail-at", "1:100")
    started = time.monotonic()
    assert run.wait(60) != 0
    assert time.monotonic() - started < 30
    (error,) = [e["message"] for e in events(run_dir) if e["event"] == "error"]
    assert re.search(r"rank 1 \(pid \d+\) left the run after RuntimeError: a failure on rank 1 at step 100", error)
    assert events(run_dir)[-1]["event"] == "finish"


def test_lrwatch_run_nproc_per_node_detached_is_steered_by_send(tmp_path):
    run_dir = tmp_path / "run"
    demo = ["demo/ddp.py", "--", *SMALL, "--epochs", "500"]
    started = lrwatch("run", "--detach", "--nproc-per-node", "2", "--run-dir", str(run_dir), *demo)
    assert started.returncode == 0, started.stderr
    launcher = int(re.search(r"pid (\d+)", started.stdout)[1])
    try:
        wait_for(lambda: (run_dir / "live.json").exists(), "rank 0's socket")
        record = json.loads((run_dir / "live.json").read_text())
        assert record["launcher"] == launcher and record["pid"] != launcher  # rank 0 serves; torchrun launched it
        assert lrwatch("send", str(run_dir), "switch", "exp:gamma=0.9").returncode == 0
        assert lrwatch("send", str(run_dir), "stop").returncode == 0
        wait_for(lambda: not _alive(launcher), "torchrun to end", timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher, signal.SIGKILL)
    log = (run_dir / "lrwatch.log").read_text()
    ranks = {int(m[1]): m.groups()[1:] for m in RANK_LINE.finditer(log)}
    assert sorted(ranks) == [0, 1] and ranks[0] == ranks[1], log[-3000:]
    assert [e["event"] for e in events(run_dir)][-3:] == ["stop", "checkpoint", "finish"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie of ours (lrwatch run --detach is not our child: never)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_plain_torchrun_that_loses_its_terminal_stops_every_rank_cleanly(tmp_path):
    """tmux kill-session: torchrun's agent hands the hangup to its ranks; lrwatch makes it a stop at one step."""
    run_dir = tmp_path / "run"
    command = " ".join([*TORCHRUN, str(ROOT / "demo" / "ddp.py"), *SMALL, "--epochs", "500", "--run-dir", str(run_dir)])
    tmux = Tmux(100, 30, f"OMP_NUM_THREADS=1 {command}")
    try:
        wait_for(lambda: (run_dir / "live.json").exists(), "rank 0's socket")
        wait_for(lambda: any(e["event"] == "epoch" for e in events(run_dir)), "an epoch")
        tmux.kill()
        wait_for(lambda: any(e["event"] == "finish" for e in events(run_dir)), "the run to finish", timeout=30)
    finally:
        tmux.kill()
    kinds = [e["event"] for e in events(run_dir)]
    assert kinds[-3:] == ["stop", "checkpoint", "finish"], kinds
    assert events(run_dir)[-3]["reason"].startswith("SIGHUP on rank")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_ddp_monitor_loses_its_terminal_and_the_ranks_train_on(tmp_path):
    run_dir = tmp_path / "run"
    demo = f"demo/ddp.py -- {' '.join(SMALL)} --epochs 500"
    cli = " ".join([*CLI, "run", "--nproc-per-node", "2", "--run-dir", str(run_dir), demo])
    tmux = Tmux(100, 30, f"cd {ROOT} && {cli}")
    try:
        tmux.wait(lambda: "running" in tmux.screen(), "the monitor")
        tmux.kill()
        step = lambda: json.loads(lrwatch("ls", "--json").stdout or "[]")  # noqa: E731
        time.sleep(2)
        before = [r["step"] for r in step() if r["run_dir"] == str(run_dir.resolve())]
        time.sleep(1)
        after = [r["step"] for r in step() if r["run_dir"] == str(run_dir.resolve())]
        assert before and after and after[0] > before[0], (before, after)  # both ranks still training
        assert lrwatch("send", str(run_dir), "stop").returncode == 0
        wait_for(lambda: any(e["event"] == "finish" for e in events(run_dir)), "the run to finish", timeout=30)
    finally:
        tmux.kill()
        record = run_dir / "live.json"
        if record.exists():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(json.loads(record.read_text())["launcher"], signal.SIGKILL)
    assert [e["reason"] for e in events(run_dir) if e["event"] == "stop"] == ["send"]


ONLY_RANK_0 = """
import time, torch, torch.distributed as dist, lrwatch
dist.init_process_group("gloo")
optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
if dist.get_rank() == 0:
    lrwatch.watch(optimizer, steps_per_epoch=10, epochs=1)
else:
    time.sleep(8)
"""


def test_watch_on_rank_0_only_fails_clearly_instead_of_hanging(tmp_path):
    script = tmp_path / "only_rank_0.py"
    script.write_text(ONLY_RANK_0)
    env = DDP_ENV | {"LRWATCH_RENDEZVOUS_SECONDS": "2", "LRWATCH_NO_SOCKET": "1"}
    out = subprocess.run([*TORCHRUN, str(script)], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert out.returncode != 0
    assert "NotOnEveryRank: rank 0: lrwatch.watch() must be called on every rank" in out.stdout + out.stderr
