"""Divergence, crashes, signals, killed processes, bad input and key storms never lose a run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrwatch.app import LRWatchApp
from lrwatch.app.charts import LossView, PreviewCache, loss_chart, lr_chart
from lrwatch.app.screens import DivergenceScreen
from lrwatch.charts.plot import ChartSpec, Line, render
from lrwatch.cli.args import build_parser
from lrwatch.cli.main import main
from lrwatch.protocol.commands import Resume, Rollback
from lrwatch.record import rundir
from lrwatch.record.history import Ema, MetricHistory
from lrwatch.record.reader import RunReader
from lrwatch.run.divergence import DivergencePolicy
from lrwatch.run.engine import Engine
from lrwatch.schedule.spec import SpecError
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer
from tests.test_app import quit_app

K = 10


class FakeWeights:
    """Counts snapshots and restores; its 'weights' are the step at which they were taken."""

    def __init__(self, engine_ref: list) -> None:
        self.engine_ref = engine_ref
        self.restored: list = []

    def snapshot(self) -> int:
        return self.engine_ref[0].step_index

    def restore(self, state: int) -> None:
        self.restored.append(state)


def make_engine(action: str, run_dir: Path | None = None, **policy) -> tuple[Engine, FakeWeights]:
    ref: list = []
    weights = FakeWeights(ref)
    timeline = Timeline.start("exp:gamma=0.9", lr=0.1, steps_per_epoch=K, total_steps=10_000)
    engine = Engine(
        FakeOptimizer(0.1),
        timeline,
        run_dir=run_dir,
        divergence=DivergencePolicy(action=action, snapshot_every=10, **policy),
        snapshotter=weights,
    )
    ref.append(engine)
    engine.begin()
    return engine, weights


def kinds(engine: Engine) -> list[str]:
    return [e.kind for e in engine.events_since(0)]


def test_a_nan_loss_stops_at_its_step_headless() -> None:
    engine, _ = make_engine("stop")
    for _ in range(30):
        assert engine.step(1.0)
    assert engine.step(float("nan")) is False
    divergence = next(e for e in engine.events_since(0) if e.kind == "divergence")
    assert (divergence.data["at_step"], divergence.data["cause"]) == (30, "non-finite")
    assert engine.stop_reason == f"divergence at step 30: loss nan with lr {engine.lr:.4g}"
    engine.finish()
    assert kinds(engine)[-3:] == ["divergence", "stop", "finish"] and engine.state == "stopped"


def test_a_spike_is_caught_after_the_warmup() -> None:
    engine, _ = make_engine("stop", spike_factor=5)
    assert engine.step(100.0)  # during the warm-up, no baseline yet
    for _ in range(30):
        assert engine.step(1.0 + 0.01 * random.random())
    assert engine.step(4.0)  # below 5 × the mean
    assert engine.step(np.inf) is False
    engine2, _ = make_engine("stop", spike_factor=5)
    for _ in range(30):
        engine2.step(1.0)
    assert engine2.step(20.0) is False
    assert next(e for e in engine2.events_since(0) if e.kind == "divergence").data["cause"] == "spike"


def test_pause_policy_holds_and_a_rollback_command_restores() -> None:
    engine, weights = make_engine("pause")
    for _ in range(25):
        engine.step(1.0)
    engine.submit(Rollback())
    engine.submit(Resume())
    lr_before = engine.lr
    assert engine.step(float("nan"))  # pauses at the boundary, applies the rollback, resumes
    assert kinds(engine)[-5:] == ["divergence", "pause", "rollback", "switch", "resume"]
    assert engine.state == "running"
    assert weights.restored == [20]
    assert engine.lr == pytest.approx(lr_before * 0.9 ** (1 / K) / 2, rel=1e-12)


def test_rollback_policy_restores_halves_and_gives_up(tmp_path: Path) -> None:
    engine, weights = make_engine("rollback", run_dir=tmp_path, max_rollbacks=2)
    for _ in range(35):
        engine.step(1.0)
    lr = engine.lr
    assert engine.step(float("nan"))
    assert weights.restored == [30]
    assert engine.lr == pytest.approx(lr * 0.9 ** (1 / K) / 2, rel=1e-12)
    for _ in range(15):
        engine.step(1.0)
    assert engine.step(float("inf"))
    assert weights.restored == [30, 46]  # a new snapshot after 10 good steps past the rollback
    assert engine.step(float("nan")) is False  # out of rollbacks
    assert "gave up (2 rollbacks)" in engine.stop_reason
    engine.finish()
    lrs = engine.history.column("lr")
    assert np.array_equal(lrs, engine.timeline.lrs(np.arange(len(lrs))))
    reader = RunReader(tmp_path)
    assert reader.timeline == engine.timeline  # the halvings replay from events.jsonl
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 53 and ",nan," in rows[36]  # every row kept, the non-finite ones too
    for line in (tmp_path / "events.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_headless_demo_exits_3_on_divergence(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lrwatch.cli", "demo", "--headless", "--epochs", "1", "--steps-per-epoch", "50",
         "--lr", "1e4", "--run-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 3
    (line,) = [line for line in proc.stderr.splitlines() if "divergence" in line]
    assert line.startswith("  stop at step ") and "loss nan with lr " in line
    events = [json.loads(x) for x in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events][-3:] == ["divergence", "stop", "finish"]


@pytest.mark.parametrize("log_y", [False, True])
@pytest.mark.parametrize(
    "y",
    [
        [np.nan, np.inf, -np.inf, 1.0, np.nan],
        [0.0, 0.0, 0.0],
        [-1.0, -2.0, 0.5],
        [3.0],
        [],
        [2.0] * 50,
        [np.nan] * 10,
        [1e-300, 1e300],
    ],
)
def test_plots_never_crash(y: list[float], log_y: bool) -> None:
    x = np.arange(len(y), dtype=float)
    for width, height in [(60, 12), (12, 4), (200, 50)]:
        text = render(ChartSpec([Line(x, np.array(y))], width, height, log_y=log_y, xlim=(0.0, max(len(y), 1))))
        assert len(text.splitlines()) == height


def test_charts_with_nan_history() -> None:
    history = MetricHistory()
    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=K, total_steps=100)
    for s in range(40):
        history.append(s, s / K, np.nan if s % 7 == 0 else 0.1, np.inf if s == 3 else (np.nan if s % 5 == 0 else 1.0))
    history.append_epoch(10, 1.0, {"val_loss": np.nan})
    for log_y in (False, True):
        render(lr_chart(history, timeline, 40, width=80, height=12, log_y=log_y, ascii=False, preview=PreviewCache()))
        spec = loss_chart(history, LossView(Ema(0.9)), timeline, 40, width=80, height=12, log_y=log_y, recent=True,
                          ascii=True)  # fmt: skip
        render(spec)


def test_rows_are_flushed_within_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(rundir.time, "monotonic", lambda: clock[0])
    writer = rundir.RunWriter(tmp_path)
    on_disk = lambda: len((tmp_path / "metrics.csv").read_text().splitlines()) - 1  # noqa: E731
    ticked = clock[0]
    for step in range(50):
        writer.add_step(step, step / 10, 0.1, 1.0)
        clock[0] += 0.03  # 30 ms a step
        if clock[0] - ticked >= 1.0:  # the engine's tick (RunLog.tick), about once a second
            writer.flush_due(clock[0])
            ticked = clock[0]
        assert on_disk() >= step + 1 - 34  # never more than a second's worth (34 steps) buffered
    writer.close()
    assert on_disk() == 50


def test_kill_9_loses_at_most_the_unflushed_second_and_still_opens(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrwatch.cli", "demo", "--headless", "--epochs", "500", "--steps-per-epoch", "50",
         "--run-dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    metrics = tmp_path / "metrics.csv"
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while len(seen) < 3 or seen[-1] < 200:  # the file grows while the run goes, not only at its end
        assert time.monotonic() < deadline and proc.poll() is None
        if metrics.exists():
            rows = len(metrics.read_text().splitlines()) - 1
            if not seen or rows > seen[-1]:
                seen.append(rows)
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    reader = RunReader(tmp_path)
    steps = reader.history.column("step")
    epoch_rows = len(reader.history.validation()[0])
    assert len(steps) + epoch_rows >= seen[-1] and np.array_equal(steps, np.arange(len(steps)))
    assert reader.status == "running"  # no finish event: it was killed


@pytest.mark.parametrize("on_hangup", ["detach", "stop"])
def test_sighup_to_the_monitor_leaves_the_terminal_sane_and_the_run_as_asked(tmp_path: Path, on_hangup: str) -> None:
    """A SIGHUP while the terminal is still there: the monitor exits 0 and restores the terminal. The run,
    a process of its own, goes on (default) or stops with a checkpoint (--on-hangup stop)."""
    from tests.test_tmux import Tmux, read_events, then_write

    run_dir, stty = tmp_path / "run", tmp_path / "stty"
    command = (
        f"{sys.executable} -m lrwatch.cli demo --epochs 100 --steps-per-epoch 50 --run-dir {run_dir} "
        f"--on-hangup {on_hangup}; {then_write('echo $?', tmp_path / 'exit')}; {then_write('stty -a', stty)}"
    )
    tmux = Tmux(100, 30, command)
    try:
        tmux.wait(lambda: "running" in tmux.screen() and len(read_events(run_dir)) > 0, "the running monitor")
        pane = ["tmux", "display", "-p", "-t", tmux.name, "#{pane_pid}"]
        shell = subprocess.run(pane, capture_output=True, text=True).stdout.strip()
        children = subprocess.run(["pgrep", "-P", shell], capture_output=True, text=True).stdout.split()
        (pid,) = (int(p) for p in children)  # the monitor: the only child of the pane's shell
        os.kill(pid, signal.SIGHUP)
        tmux.wait(stty.exists, "the shell after the app")
        assert (tmp_path / "exit").read_text().strip() == "0"
        modes = stty.read_text().split()
        assert "icanon" in modes and "echo" in modes  # raw mode left behind would show -icanon -echo
        if on_hangup == "detach":
            assert (run_dir / "live.json").exists() and read_events(run_dir)[-1]["event"] != "finish"
            send = [sys.executable, "-m", "lrwatch.cli", "send", str(run_dir), "stop"]
            assert subprocess.run(send, capture_output=True, timeout=60).returncode == 0
        deadline = time.monotonic() + 30
        while not read_events(run_dir) or read_events(run_dir)[-1]["event"] != "finish":
            assert time.monotonic() < deadline, "the run did not stop"
            time.sleep(0.1)
        events = read_events(run_dir)
        stop = next(e for e in events if e["event"] == "stop")
        assert stop["reason"] == ("send" if on_hangup == "detach" else "hangup")
        assert events[-1]["status"] == "stopped" and any(e["event"] == "checkpoint" for e in events)
    finally:
        tmux.kill()


FLAGS = ["--lr", "--epochs", "--steps-per-epoch", "--switch", "--per-epoch", "--format", "--log-y", "--schedule",
         "--device", "--fps", "--on-divergence", "--spike-factor", "--resume", "--batch-size", "--seed"]  # fmt: skip
VALUES = st.one_of(
    st.sampled_from(["0", "-1", "nan", "inf", "1e400", "3", "0.1", "cosine", "x:y", "5:exp:gamma=2", "csv", ""]),
    st.text(max_size=12),
)


@settings(max_examples=1000, deadline=None)
@given(
    command=st.sampled_from(["schedule", "compare", "demo", "run", "view"]),
    argv=st.lists(st.one_of(st.sampled_from(FLAGS), VALUES), max_size=6),
)
def test_cli_argument_fuzz_parses_or_fails_with_one_line(command: str, argv: list[str]) -> None:
    """Every flag with junk values: argument parsing gives a namespace or one clear line, never a traceback."""
    from lrwatch.cli.args import UsageError

    try:
        build_parser().parse_args([command, *argv])
    except UsageError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("lrwatch")
    except SystemExit as exc:  # --help
        assert exc.code == 0


@settings(max_examples=300, deadline=None)
@given(
    spec=st.sampled_from(["exp", "cosine", "cosine-restarts", "step"]),
    params=st.dictionaries(
        st.sampled_from(["gamma", "T_max", "eta_min", "T_0", "T_mult", "step_size", "decay_steps", "bogus"]),
        st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5)),
        max_size=3,
    ),
)
def test_editing_parameters_validates_or_changes_nothing(spec: str, params: dict) -> None:
    timeline = Timeline.start(spec, lr=0.1, steps_per_epoch=K, total_steps=1000)
    try:
        edited = timeline.edit(500, **params)
    except SpecError as exc:
        assert "\n" not in str(exc)
        return
    lrs = edited.lrs(np.arange(1000))
    assert np.all(np.isfinite(lrs)) and np.all(lrs >= 0)


def test_schedule_cli_fuzzed_specs_exit_0_or_2(capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(0)
    alphabet = "expcosinertp-:=,.0123456789_TmaxgG "
    for _ in range(500):
        spec = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        code = main(["schedule", spec, "--lr", "0.1", "--epochs", "2"])
        out, err = capsys.readouterr()
        assert (code == 0 and out.startswith("step,epoch,lr")) or (code == 2 and len(err.splitlines()) == 1)


def test_resume_from_a_bad_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "run.json").write_text(json.dumps({"config": {"command": "demo", "epochs": 1}}))
    (tmp_path / "checkpoint.pt").write_bytes(b"definitely not a checkpoint")
    assert main(["demo", "--headless", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"lrwatch: {tmp_path}/checkpoint.pt: refused, it does not load with weights_only=True")
    assert len(err.splitlines()) == 1


KEYS = [
    *("e", "c", "r", "s", "E", "C", "R", "S", "v", "enter", "escape", "colon", "plus", "minus", "a", "l", "L", "w"),
    *("left_square_bracket", "right_square_bracket", "space", "question_mark", "k", "x", "1", "backspace"),
]
SIZES = [(40, 12), (80, 24), (100, 30), (55, 18), (160, 48)]


def storm(app: LRWatchApp, keys: list[str]) -> None:
    """Keys as a fast typist sends them: all at once, no waiting for the app between them."""
    from textual import events

    for key in keys:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(app)
        app._driver.send_message(event)


async def test_key_storm_keeps_the_timeline_consistent_with_events_jsonl(tmp_path: Path) -> None:
    from tests.test_app import slow_train

    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=50, total_steps=10**6)
    engine = Engine(FakeOptimizer(0.1), timeline, run_dir=tmp_path)
    app = LRWatchApp(engine, lambda e: slow_train(e, delay=0.005), device="cpu", fps=4)
    rng = random.Random(1)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(200):
            storm(app, [rng.choice(KEYS) for _ in range(rng.randint(1, 6))])
            if rng.random() < 0.3:
                await pilot.resize_terminal(*rng.choice(SIZES))
            await pilot.pause(0.01)
            while app.screen is not app.monitor_screen:  # close whatever the storm opened
                await pilot.press("escape")
        if engine.state == "paused":
            await pilot.press("space")
        await quit_app(app, pilot)
    assert app.return_code == 0 and engine.state == "stopped"
    reader = RunReader(tmp_path)
    assert reader.skipped == []
    assert reader.timeline == engine.timeline
    assert sum(e.kind in ("switch", "edit") for e in engine.events_since(0)) > 10


async def test_divergence_alert_offers_a_rollback(tmp_path: Path) -> None:
    ref: list = []
    weights = FakeWeights(ref)
    timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=K, total_steps=10**6)
    engine = Engine(FakeOptimizer(0.1), timeline, divergence=DivergencePolicy("pause", snapshot_every=10),
                    snapshotter=weights)  # fmt: skip
    ref.append(engine)

    def train(e: Engine) -> None:
        e.begin()
        for s in range(10**6):
            time.sleep(0.002)
            if not e.step(float("nan") if s == 60 else 1.0):
                return

    app = LRWatchApp(engine, train, fps=4)
    async with app.run_test(size=(100, 30)) as pilot:
        deadline = time.monotonic() + 10
        while not isinstance(app.screen, DivergenceScreen):
            assert time.monotonic() < deadline
            await pilot.pause(0.05)
        assert engine.state == "paused" and "step 60" in str(app.screen.query_one("Static").render())
        await pilot.press("r")
        while engine.state != "running":
            await pilot.pause(0.05)
        assert weights.restored == [60] or weights.restored == [50]
        assert "rollback" in [e.kind for e in engine.events_since(0)]
        await pilot.press("q")


def test_a_snapshot_survives_its_restore_for_a_second_rollback() -> None:
    """Two rollbacks to one snapshot restore the same optimizer state: the first restore must not hand the
    snapshot's own tensors to the optimizer, which would then train them in place."""
    import torch

    from lrwatch.run.checkpoints import WeightsSnapshot

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def train_step() -> None:
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()

    train_step()
    snapshots = WeightsSnapshot(model, optimizer)
    saved = snapshots.snapshot()
    momentum = saved[1]["state"][0]["momentum_buffer"].clone()
    snapshots.restore(saved)
    train_step()
    snapshots.restore(saved)
    assert torch.equal(optimizer.state[model.weight]["momentum_buffer"], momentum)
