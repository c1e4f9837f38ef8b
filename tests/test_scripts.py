"""``lrwatch run`` on scripts of the shapes people run, unmodified but for lines that record what they saw
(``tests/scripts/``): nanoGPT (gradient accumulation, ``get_lr`` by hand, ``init_from=resume``), an LBFGS
closure loop, tutorial loops with ``SequentialLR`` and ``ReduceLROnPlateau``. Each runs as a subprocess."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import torch

from lrwatch.record.rundir import read_metric_rows
from lrwatch.run.checkpoints import recorded_state
from lrwatch.schedule.timeline import Timeline
from tests.test_live import CLI, ENV, events, lrwatch, run_pid, wait_for

SCRIPTS = Path(__file__).resolve().parent / "scripts"
ONE_THREAD = {**ENV, "OMP_NUM_THREADS": "1"}  # tiny models: on 2 shared cores, more threads only contend
NANOGPT = SCRIPTS / "nanogpt_train.py"


def steps(run_dir: Path) -> list[tuple]:
    return [r for r in read_metric_rows(run_dir / "metrics.csv") if len(r) == 4]


def run(tmp_path: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``lrwatch run --headless ...`` in ``tmp_path`` (nanoGPT writes ``out/`` and ``data/`` there)."""
    argv = [*CLI, "run", "--headless", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ONE_THREAD, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def get_lr(it: int) -> float:
    """nanoGPT's get_lr with the script's defaults (warmup 4 iterations to 1e-2, cosine to 1e-3 at 20)."""
    if it < 4:
        return 1e-2 * (it + 1) / 5
    if it > 20:
        return 1e-3
    return 1e-3 + 0.5 * (1.0 + math.cos(math.pi * (it - 4) / 16)) * (1e-2 - 1e-3)


def test_nanogpt_logs_each_steps_mean_loss_and_resumes_from_its_own_checkpoint(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    # 12 steps; ckpt.pt at iterations 4 and 8; lrwatch takes the LR over at step 6 (--switch: no epochs, EPOCH = step)
    first = run(tmp_path, "--run-dir", str(run_dir), "--switch", "6:exp:gamma=0.8", str(NANOGPT),
                "--", "--max_iters=11", "--eval_interval=4", f"--report={tmp_path / 'seen1.json'}")  # fmt: skip
    seen = json.loads((tmp_path / "seen1.json").read_text())
    rows = steps(run_dir)
    assert [r[0] for r in rows] == list(range(12)) and all(math.isnan(r[1]) for r in rows)  # steps only
    # The loss is the step's: the sum of the four 1/4-scaled micro-batch losses (their mean), not a quarter of it.
    assert np.allclose([r[3] for r in rows], seen["step_losses"], rtol=1e-6, atol=0)
    assert np.allclose([r[3] for r in rows], np.array(seen["printed"]), rtol=0.2)  # nanoGPT's own print, roughly
    lrs = np.array([r[2] for r in rows])
    assert np.array_equal(lrs, seen["used_lrs"])
    assert np.allclose(lrs[:6], [get_lr(i) for i in range(6)], rtol=1e-12)  # its own get_lr until the switch
    taken = get_lr(5) * 0.8 ** np.arange(6)  # then exp from the LR in force (step 5's), whatever get_lr says
    assert np.allclose(lrs[6:], taken, rtol=1e-12)
    messages = [e.get("message", "") for e in events(run_dir)]
    assert any("steps no LR scheduler" in m and "param_group['lr']" in m for m in messages), messages
    assert "at step 6" in first.stderr
    saved = json.loads((run_dir / "lrwatch_state.json").read_text())  # at the script's end
    assert saved["step"] == 12 and saved["drives_from"] == 6 and saved["scripted"] == []
    assert recorded_state(run_dir) == saved  # after a kill -9 (no state saved), the run directory says the same

    # nanoGPT resumes from ckpt.pt (iteration 8): lrwatch continues the same run directory at step 8, the step
    # AdamW's loaded state counts, under the same timeline: still lrwatch's exp, not get_lr's cosine.
    run(tmp_path, "--resume", str(run_dir), str(NANOGPT), "--", "--init_from=resume", "--max_iters=14",
        "--eval_interval=100", f"--report={tmp_path / 'seen2.json'}")  # fmt: skip
    seen2 = json.loads((tmp_path / "seen2.json").read_text())
    assert seen2["iters"][0] == 8
    resumed = steps(run_dir)
    assert [r[0] for r in resumed] == list(range(15))  # each step once: run 1's steps 8..11 were dropped
    assert resumed[:8] == rows[:8]
    lrs = np.array([r[2] for r in resumed])
    assert np.array_equal(lrs[8:], seen2["used_lrs"])
    assert np.allclose(lrs[6:], get_lr(5) * 0.8 ** np.arange(9), rtol=1e-12)
    assert np.allclose([r[3] for r in resumed[8:]], seen2["step_losses"], rtol=1e-6, atol=0)
    evs = events(run_dir)
    (back,) = [e for e in evs if e["event"] == "resumed"]
    assert back["step"] == 8
    assert sum(e["event"] == "finish" for e in evs) == 2


def test_lbfgs_logs_the_loss_its_step_returns(tmp_path: Path) -> None:
    run(tmp_path, "--run-dir", str(tmp_path / "run"), str(SCRIPTS / "lbfgs_sine.py"), "--", str(tmp_path / "s.json"))
    returned = json.loads((tmp_path / "s.json").read_text())["returned"]
    rows = steps(tmp_path / "run")
    assert len(rows) == len(returned) == 3
    assert np.array_equal([r[3] for r in rows], returned)  # the loss at the step's start, not a mean of 20


def test_a_switch_takes_sequential_lr_over_and_get_last_lr_tells_the_truth(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = SCRIPTS / "tutorial_schedulers.py"
    run(tmp_path, "--run-dir", str(run_dir), "--switch", "3:exp:gamma=0.5", str(script),
        "--", "sequential", str(tmp_path / "s.json"))  # fmt: skip
    seen = json.loads((tmp_path / "s.json").read_text())
    lrs = np.array([r[2] for r in steps(run_dir)])
    assert len(lrs) == 64 and np.array_equal(lrs, seen["used"])
    expected = Timeline.start("exp:gamma=0.5", lr=lrs[23], steps_per_epoch=8).lrs(np.arange(40))  # epoch 3 = step 24
    assert np.allclose(lrs[24:], expected, rtol=1e-12)
    # After the take-over, get_last_lr() (and _last_lr) after each epoch is the LR lrwatch set for the next step.
    lrwatch_next = [*lrs[32::8], expected[-1] * 0.5 ** (1 / 8)]
    assert np.allclose(seen["last_lr"][3:], lrwatch_next, rtol=1e-12)
    assert seen["private_last_lr"][3:] == seen["last_lr"][3:]
    saved = torch.load(str(tmp_path / "s.json") + ".pt", weights_only=True)  # the script's checkpoint, as it was
    assert saved["scheduler"]["_last_lr"][0] == lrwatch_next[-1] and "step" not in saved["scheduler"]
    messages = [e.get("message", "") for e in events(run_dir)]
    assert any("SequentialLR (LinearLR, CosineAnnealingLR) no longer sets the LR" in m for m in messages), messages


def test_schedule_takes_reduce_lr_on_plateau_over_from_the_first_step(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run(tmp_path, "--run-dir", str(run_dir), "--schedule", "step:step_size=2,gamma=0.5",
        str(SCRIPTS / "tutorial_schedulers.py"), "--", "plateau", str(tmp_path / "s.json"))  # fmt: skip
    seen = json.loads((tmp_path / "s.json").read_text())
    lrs = np.array([r[2] for r in steps(run_dir)])
    timeline = Timeline.start("step:step_size=2,gamma=0.5", lr=0.1, steps_per_epoch=8)
    assert np.allclose(lrs, timeline.lrs(np.arange(64)), rtol=1e-12) and np.array_equal(lrs, seen["used"])
    assert np.allclose(seen["last_lr"], timeline.lrs(np.arange(8, 72, 8)), rtol=1e-12)  # no halvings it did not do
    (switch,) = [e for e in events(run_dir) if e["event"] == "switch"]
    assert switch["step"] == 0 and switch["base_lr"] == 0.1 and switch["took_over"]
    assert any("ReduceLROnPlateau no longer sets the LR" in e.get("message", "") for e in events(run_dir))


def test_a_detached_script_is_listed_and_steered_before_its_first_step(tmp_path: Path) -> None:
    """nanoGPT spends seconds before its first optimizer step (compile, a first evaluation): the run is
    listed as starting, and what is sent meanwhile lands at that step."""
    run_dir = tmp_path / "run"
    report = tmp_path / "seen.json"
    started = time.monotonic()
    detached = subprocess.run(
        [*CLI, "run", "--detach", "--run-dir", str(run_dir), str(NANOGPT), "--", "--max_iters=5",
         "--startup_delay=6", "--eval_interval=100", f"--report={report}"],
        capture_output=True, text=True, timeout=60, env=ONE_THREAD, cwd=tmp_path,
    )  # fmt: skip
    assert detached.returncode == 0, detached.stderr
    try:
        steer_before_the_first_step(run_dir, time.monotonic() - started)
    finally:
        if (run_dir / "live.json").exists():  # a failed check must not leave the run paused for ever
            os.kill(run_pid(run_dir), signal.SIGTERM)
    lrs = [r[2] for r in steps(run_dir)]
    assert np.allclose(lrs, Timeline.start("cosine:T_max=20", lr=get_lr(0), steps_per_epoch=1).lrs(np.arange(6)))


def steer_before_the_first_step(run_dir: Path, took: float) -> None:
    assert took < 8.0  # it answers well before the script's first step
    (row,) = [r for r in json.loads(lrwatch("ls", "--json").stdout) if r["run_dir"] == str(run_dir.resolve())]
    assert row["state"] == "starting" and row["epoch"] is None
    assert "(before the script's first optimizer step)" in lrwatch("ls").stdout
    view = subprocess.Popen([*CLI, "view", "--summary", str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    paused = lrwatch("send", str(run_dir), "pause")  # waits for the first step's boundary
    assert paused.returncode == 0 and json.loads(paused.stdout)["step"] == 0, paused.stderr
    assert "is starting; the command waits for its first optimizer step" in paused.stderr
    switched = lrwatch("send", str(run_dir), "switch", "cosine:T_max=20")
    event = json.loads(switched.stdout)
    assert switched.returncode == 0 and event["step"] == 0 and event["base_lr"] == get_lr(0)  # what the script set
    assert "(epoch" not in switched.stderr  # steps only
    saved = lrwatch("send", str(run_dir), "checkpoint")  # a zero-line run: lrwatch's own state
    assert saved.returncode == 0 and json.loads(saved.stdout)["path"].endswith("lrwatch_state.json"), saved.stdout
    assert json.loads((run_dir / "lrwatch_state.json").read_text())["drives_from"] == 0
    assert lrwatch("send", str(run_dir), "resume").returncode == 0
    out, err = view.communicate(timeout=30)
    assert view.returncode == 0 and "starting" in err and "run:" in out, (out, err)
    wait_for(lambda: not (run_dir / "live.json").exists(), "the run to end", 60)


def test_a_stop_before_the_first_step_ends_the_script_at_once(tmp_path: Path) -> None:
    script = tmp_path / "slow.py"
    script.write_text("import time\ntime.sleep(120)\nprint('never')\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    child = subprocess.Popen([*CLI, "run", "--headless", "--run-dir", str(run_dir), str(script)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)  # fmt: skip
    try:
        wait_for(lambda: (run_dir / "live.json").exists(), "the run to serve")
        stopped = lrwatch("send", str(run_dir), "stop")
        assert stopped.returncode == 0 and json.loads(stopped.stdout)["event"] == "stop", stopped
        _, err = child.communicate(timeout=10)
    finally:
        child.kill()
    assert child.returncode == 0 and "before the first optimizer step" in err, err
    assert not (run_dir / "live.json").exists()


def test_demo_detach_answers_send_as_soon_as_it_returns(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    out = lrwatch("demo", "--detach", "--epochs", "1", "--steps-per-epoch", "400", "--run-dir", str(run_dir))
    assert out.returncode == 0, out.stderr
    paused = lrwatch("send", str(run_dir), "pause")
    assert paused.returncode == 0 and json.loads(paused.stdout)["event"] == "pause", paused.stderr
    assert lrwatch("send", str(run_dir), "stop").returncode == 0
    wait_for(lambda: not (run_dir / "live.json").exists(), "the run to end", 30)


def test_a_starting_run_answers_queues_commands_and_hands_them_to_its_engine(tmp_path: Path) -> None:
    """In one process: the server of a starting run, then the engine it adopts (``Host.attach`` does that)."""
    from lrwatch.live.client import RemoteRunSource, RunClient
    from lrwatch.live.host import Host
    from lrwatch.live.starting import starting_record
    from lrwatch.protocol.commands import Switch
    from lrwatch.run.engine import Engine
    from tests.conftest import FakeOptimizer

    host = Host(run_dir=tmp_path, log=None)
    host.serve_early()
    record = host.early.record
    assert starting_record(tmp_path) == record  # live, no run.json yet: what view and serve wait for
    client = RunClient(record.socket, kind="send")
    assert client.status().state == "starting"
    monitor = RemoteRunSource.of_path(record.socket).start()
    wait_for(lambda: monitor.status().state == "starting", "the monitor to hear the run is starting")
    answers: list[dict] = []
    sender = threading.Thread(target=lambda: answers.append(client.command(Switch("exp:gamma=0.5"))))
    sender.start()
    time.sleep(0.3)
    assert not answers and not monitor.ready.is_set()  # both wait for the first step
    timeline = Timeline.start("cosine:T_max=100", lr=0.02, steps_per_epoch=1)
    engine = Engine(FakeOptimizer(0.02), timeline, run_dir=tmp_path, drive_lr=False, take_over=True)
    server = host.attach(engine)
    assert server is not None and server.record == record  # the same socket, now the engine's
    engine.begin()  # the first step's boundary: the switch that waited lands at step 0, from the LR set then
    sender.join(10)
    assert answers[0]["event"]["event"] == "switch" and answers[0]["event"]["step"] == 0
    assert answers[0]["event"]["base_lr"] == 0.02 and engine.control.took_over_at == 0
    assert monitor.ready.wait(10)  # its snapshot, then the switch's timeline
    wait_for(lambda: monitor.timeline.segments[-1].spec.kind == "exp", "the monitor to see the switch")
    assert starting_record(tmp_path) is None
    client.close()
    engine.finish()
    assert monitor.closed.wait(10)
