"""The schedule shown is the one in force (issue 23 item 4): ``lrwatch run`` on scripts with their own schedule
(``tests/scripts/``), as subprocesses. A scheduler lrwatch knows is its equal spec, exact to its LRs; another is
observed on a copy; nanoGPT's ``get_lr`` is "set by the script". ``ls``, ``run.json``, the events, ``view
--summary`` and the schedule panel say the same, and the schedule keys say what they can do."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from lrwatch.app import LRWatchApp
from lrwatch.record.reader import RunReader
from lrwatch.record.rundir import read_metric_rows, read_run_info
from lrwatch.run.engine import Engine
from lrwatch.schedule.script import ScriptSchedule
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer, app_wait_for
from tests.test_live import CLI, ENV, events, lrwatch, run_pid, wait_for

SCRIPTS = Path(__file__).resolve().parent / "scripts"
ONE_THREAD = {**ENV, "OMP_NUM_THREADS": "1"}


def lrs_of(run_dir: Path) -> np.ndarray:
    return np.array([r[2] for r in read_metric_rows(run_dir / "metrics.csv") if len(r) == 4])


def headless(tmp_path: Path, script: str, *args: str) -> Path:
    run_dir = tmp_path / "run"
    argv = [*CLI, "run", "--headless", "--run-dir", str(run_dir), str(SCRIPTS / script), "--", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=ONE_THREAD, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


def lambda_lr(t: np.ndarray) -> np.ndarray:
    """``tests/scripts/lambda_schedule.py``'s LambdaLR, at its ``t``-th step."""
    return 0.05 * (0.5 + 0.5 * np.cos(t / 3) * 0.97**t)


# (script and its arguments, the label shown, the LR of each optimizer step as the scheduler itself gives it)
CASES = {
    "SequentialLR per epoch": (
        ("tutorial_schedulers.py", "sequential"),
        "cosine:T_max=6,warmup=2,warmup_start=0.1",
        None,  # what the script saw (its report)
    ),
    "OneCycleLR per batch": (("lambda_schedule.py", "onecycle"), "onecycle:total_steps=48steps", None),
    "LambdaLR per batch": (("lambda_schedule.py", "batch"), "LambdaLR (observed)", lambda_lr(np.arange(48))),
    "LambdaLR per epoch": (("lambda_schedule.py", "epoch"), "LambdaLR (observed)", lambda_lr(np.arange(48) // 8)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_scripts_own_schedule_is_recorded_and_previewed_exactly(tmp_path: Path, case: str) -> None:
    (script, kind), label, expected = CASES[case]
    run_dir = headless(tmp_path, script, kind, str(tmp_path / "seen.json"))
    used = np.array(json.loads((tmp_path / "seen.json").read_text())["used"])
    applied = lrs_of(run_dir)
    assert np.array_equal(applied, used)  # the script's LRs, untouched: the copy stepped was never its optimizer
    if expected is not None:
        assert np.allclose(used, expected, rtol=1e-12)  # its LambdaLR went on as alone (not stepped by lrwatch)
    shown = [e for e in events(run_dir) if e["event"] == "schedule"]
    assert shown and shown[-1]["schedule"] == label  # learnt at the second step: stepped per batch, or not
    info = read_run_info(run_dir)["timeline"]
    assert info["segments"][0]["spec"] == label and info["script"]["how"] in ("mapped", "observed")
    assert "cosine:T_max=10" not in (run_dir / "events.jsonl").read_text()  # no schedule that never ran
    # The preview from the schedule event on is the scheduler's own LRs, step for step (as far as it reaches).
    timeline = RunReader(run_dir).timeline
    assert timeline.label_of(timeline.segments[0]) == label
    start = shown[-1]["step"]
    end = min(timeline.preview_end or len(used), len(used))
    assert end - start >= 40
    assert np.allclose(timeline.lrs(np.arange(start, end)), used[start:end], rtol=1e-12, atol=0)
    summary = lrwatch("view", "--summary", str(run_dir))
    assert summary.returncode == 0 and summary.stdout.rstrip().endswith(label), summary.stdout


def test_reduce_lr_on_plateau_is_shown_flat_from_the_lr_in_force(tmp_path: Path) -> None:
    run_dir = headless(tmp_path, "tutorial_schedulers.py", "plateau", str(tmp_path / "seen.json"))
    used = lrs_of(run_dir)
    shown = [e for e in events(run_dir) if e["event"] == "schedule"]
    assert {e["schedule"] for e in shown} == {"plateau:factor=0.5,patience=0"}
    drops = [s for s in range(1, len(used)) if used[s] != used[s - 1]]
    assert drops and {e["step"] for e in shown[1:]} == set(drops)  # each halving: shown from the new LR
    for e in shown:
        timeline = Timeline.from_dict(e["timeline"])
        assert timeline.lr_at(e["step"]) == used[e["step"]]


def live_run(tmp_path: Path, script: str, *args: str) -> Path:
    run_dir = tmp_path / "run"
    # --spike-factor: the tutorial's exact linear target takes its loss to 1e-17, where float noise is a "spike"
    argv = [*CLI, "run", "--detach", "--spike-factor", "1e300", "--run-dir", str(run_dir), str(SCRIPTS / script)]
    argv += ["--", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=ONE_THREAD, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return run_dir


def ls_schedule(run_dir: Path) -> str:
    rows = json.loads(lrwatch("ls", "--json").stdout)
    (row,) = [r for r in rows if r["run_dir"] == str(run_dir.resolve())]
    return row["schedule"]


def stop(run_dir: Path) -> None:
    if (run_dir / "live.json").exists():
        os.kill(run_pid(run_dir), signal.SIGTERM)
        wait_for(lambda: not (run_dir / "live.json").exists(), "the run to end", 30)


def test_nanogpt_is_set_by_the_script_until_a_switch(tmp_path: Path) -> None:
    run_dir = live_run(tmp_path, "nanogpt_train.py", "--max_iters=100000", "--eval_interval=100000")
    try:
        wait_for(lambda: len(lrs_of(run_dir)) > 5, "nanoGPT's first steps")
        assert ls_schedule(run_dir) == "set by the script"
        assert "set by the script" in lrwatch("ls").stdout
        refused = lrwatch("send", str(run_dir), "edit", "gamma=0.5")
        reason = json.loads(refused.stdout)["reason"]
        assert refused.returncode == 1 and reason.startswith("the LR is set by the script: a switch"), reason
        assert "edits need a switch first" in reason
        switched = lrwatch("send", str(run_dir), "switch", "exp:gamma=0.99")
        assert switched.returncode == 0, switched.stderr
        wait_for(lambda: ls_schedule(run_dir) == "exp:gamma=0.99", "ls to show the switch")
    finally:
        stop(run_dir)
    start = events(run_dir)[0]
    assert start["event"] == "start" and start["timeline"]["segments"][0]["spec"] == "set by the script"
    assert start["timeline"]["script"]["how"] == "by-hand"
    assert read_run_info(run_dir)["timeline"]["segments"][0]["spec"] == "set by the script"
    summary = lrwatch("view", "--summary", str(run_dir)).stdout
    assert summary.rstrip().endswith("set by the script → exp:gamma=0.99"), summary
    assert RunReader(run_dir).timeline.segments[0].schedule.kind == "constant"  # its placeholder, never drawn
    assert RunReader(run_dir).timeline.script is not None


def test_an_edit_of_the_scripts_mapped_schedule_takes_the_lr_over_on_its_clock(tmp_path: Path) -> None:
    run_dir = live_run(tmp_path, "tutorial_schedulers.py", "sequential", str(tmp_path / "seen.json"), "5000")
    label = "cosine:T_max=4998,warmup=2,warmup_start=0.1"
    try:
        wait_for(lambda: len(lrs_of(run_dir)) > 30, "the script's first epochs")
        assert ls_schedule(run_dir) == label
        edited = lrwatch("send", str(run_dir), "edit", "T_max=12")
        event = json.loads(edited.stdout)
        assert edited.returncode == 0 and event["took_over"] and event["spec"] == label.replace("4998", "12")
        at = event["step"]
        assert ls_schedule(run_dir) == "cosine:T_max=12,warmup=2,warmup_start=0.1"
        wait_for(lambda: len(lrs_of(run_dir)) > at + 40, "steps after the edit")
    finally:
        stop(run_dir)
    lrs = lrs_of(run_dir)
    epoch = np.arange(len(lrs)) // 8  # the scheduler's clock: once per epoch, from its step 0 (the origin kept)
    cosine = 0.05 * (1 + np.cos(np.pi * (epoch - 2) / 12))
    assert np.allclose(lrs[at:], cosine[at:], rtol=1e-12)  # the edited spec, on the script's own clock
    assert np.allclose(lrs[16:at], 0.05 * (1 + np.cos(np.pi * (epoch[16:at] - 2) / 4998)), rtol=1e-12)
    assert np.allclose(RunReader(run_dir).timeline.lrs(np.arange(at, len(lrs))), lrs[at:], rtol=1e-12)
    assert any("took over the LR" in e.get("message", "") for e in events(run_dir))


def script_app(script: ScriptSchedule, spec: str | None) -> LRWatchApp:
    timeline = Timeline.of_script(script, spec, lr=0.1, steps_per_epoch=8, total_steps=4000)
    engine = Engine(FakeOptimizer(0.1), timeline, drive_lr=False, take_over=True)

    def train(engine: Engine) -> None:
        import time

        engine.begin()
        for s in range(10**9):
            time.sleep(0.002)
            if not engine.step(1.0 / (1 + s / 100)):
                return

    return LRWatchApp(engine, train, device="cpu", fps=4)


PANELS = {
    "mapped": (ScriptSchedule("mapped", "SequentialLR (LinearLR, CosineAnnealingLR)", 8), "cosine:T_max=40,warmup=2",
               ["cosine:T_max=40,warmup=2", "the script's SequentialLR", "stepped per epoch",
                "a switch or an edit hands the LR to lrwatch"]),
    "observed": (ScriptSchedule("observed", "LambdaLR", 1, tuple(0.1 * 0.99 ** np.arange(4000)), 0), None,
                 ["LambdaLR (observed)", "steps ahead, stepped on a copy", "a switch (e c r s, :) replaces it"]),
    "set by hand": (ScriptSchedule("by-hand", "param_group['lr']"), None,
                    ["set by the script", "param_group['lr'] by hand: nothing ahead", "edits need a switch first"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PANELS))
async def test_the_schedule_panel_says_whose_schedule_is_in_force(case: str) -> None:
    script, spec, lines = PANELS[case]
    app = script_app(script, spec)
    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: len(app.source.history) > 5, pilot, timeout=20)  # a loaded machine: slow start

        def panel() -> str:
            return " ".join(str(app.screen.query_one("#schedule").render()).split())

        await app_wait_for(lambda: lines[0] in panel(), pilot, timeout=20)
        assert all(line in panel() for line in lines), panel()
        await pilot.press("plus")  # nudge: a mapped spec is edited (and taken over); the others say why not
        if case == "mapped":
            await app_wait_for(lambda: any(e.kind == "edit" for e in app.source.events_since(0)), pilot, timeout=20)
            await app_wait_for(lambda: "cosine:T_max=50,warmup=2" in panel(), pilot, timeout=20)
            assert app.source.status().drives_lr
        else:
            notes = [n.message for n in app._notifications]
            assert any("edits need a switch first" in note for note in notes), notes
            assert not app.source.status().drives_lr
        await pilot.press("q")
        await app_wait_for(lambda: not app.is_running or app.return_code is not None, pilot, timeout=15)
    assert app.return_code == 0
    assert math.isfinite(app.source.status().lr)


def test_the_preview_grows_with_the_axis_of_a_run_of_unknown_length() -> None:
    """A script's run has no known length: its axis grows with it, and the preview ahead must reach its end
    (it was kept at the first axis's end while the timeline stayed the same, so nothing was drawn ahead)."""
    from lrwatch.app.charts import PreviewCache

    script = ScriptSchedule("mapped", "CosineAnnealingLR", 1)
    timeline = Timeline.of_script(script, "cosine:T_max=5000steps", lr=0.1, steps_per_epoch=1, steps_only=True)
    cache = PreviewCache()
    x, _ = cache.get(timeline, 60, 200)
    assert x.max() == 199
    x, y = cache.get(timeline, 60, 2000)
    assert x.max() == 1999 and np.allclose(y, timeline.lrs(x))
