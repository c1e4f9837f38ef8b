from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from lrwatch.protocol.commands import EditParams, Pause, Resume, Stop, Switch, command_from_dict
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer

K = 10


def make_engine(total_epochs: int = 20, spec: str = "cosine", run_dir: Path | None = None, **kw) -> Engine:
    timeline = Timeline.start(spec, lr=0.1, steps_per_epoch=K, total_steps=total_epochs * K)
    return Engine(kw.pop("optimizer", FakeOptimizer(0.1)), timeline, run_dir=run_dir, **kw)


def loop(engine: Engine, on_step=None, epochs: int | None = None) -> list[float]:
    """A training loop on the public API; returns the LR the optimizer held at each step."""
    applied: list[float] = []
    engine.begin()
    total = engine.timeline.total_steps
    for s in range(total if epochs is None else epochs * K):
        applied.append(engine.optimizer.param_groups[0]["lr"])
        if on_step:
            on_step(s)
        if not engine.step(loss=1.0 / (s + 1)):
            break
        if (s + 1) % K == 0:
            engine.end_epoch(val_loss=0.5, val_acc=0.75)
    return applied


def test_applied_lrs_are_the_preview() -> None:
    engine = make_engine()
    preview = engine.timeline.preview(0)
    applied = loop(engine)
    assert np.array_equal(np.array(applied), preview)
    assert np.array_equal(engine.history.column("lr"), preview)


def test_commands_land_at_the_next_step_boundary() -> None:
    engine = make_engine()

    def on_step(s: int) -> None:
        if s == 57:
            engine.submit(Switch("exp:gamma=0.5"))
        if s == 120:
            engine.submit(EditParams((("gamma", 0.9),)))

    applied = loop(engine, on_step)
    switch = next(e for e in engine.events_since(0) if e.kind == "switch")
    edit = next(e for e in engine.events_since(0) if e.kind == "edit")
    assert (switch.step, switch.data["spec"]) == (58, "exp:gamma=0.5")
    assert (edit.step, edit.data["spec"]) == (121, "exp:gamma=0.9")
    assert applied[58] == applied[57]
    assert np.array_equal(np.array(applied), engine.timeline.lrs(np.arange(len(applied))))


def test_preview_before_a_switch_is_what_ran_until_it() -> None:
    engine = make_engine()
    previews: dict[int, np.ndarray] = {}

    def on_step(s: int) -> None:
        if s in (30, 90):
            previews[s] = engine.timeline.preview(s + 1)
        if s == 90:
            engine.submit(Switch("step:step_size=2"))

    applied = np.array(loop(engine, on_step))
    assert np.array_equal(applied[31:91], previews[30][:60])
    assert applied[91] == applied[90]  # a switch continues from the LR in force
    assert not np.array_equal(applied[91:], previews[90])
    assert np.array_equal(applied[91:], engine.timeline.preview(91))


def test_commands_from_another_thread_while_training() -> None:
    engine = make_engine(total_epochs=1_000_000)
    thread = engine.start_thread(loop)
    specs = ["exp", "cosine", "cosine-restarts", "step", "cosine:T_max=3,anchor=base"]
    for spec in specs:
        engine.submit(Switch(spec))
        time.sleep(0.01)
    engine.submit(Stop())
    thread.join(10)
    assert engine.state == "stopped"
    lr = engine.history.column("lr")
    assert np.array_equal(lr, engine.timeline.lrs(np.arange(len(lr))))
    kinds = [e.kind for e in engine.events_since(0)]
    assert kinds[0] == "start" and kinds[-2:] == ["stop", "finish"]
    assert kinds.count("switch") == len(specs)


def test_pause_holds_at_a_step_boundary_until_resume() -> None:
    engine = make_engine(total_epochs=1_000_000)
    engine.submit(Pause())
    thread = engine.start_thread(loop)
    time.sleep(0.3)
    assert engine.state == "paused" and len(engine.history) == 0
    engine.submit(Switch("exp:gamma=0.5"))  # applied while paused, at the paused step
    time.sleep(0.3)
    assert engine.timeline.segments[-1].start_step == 0
    engine.submit(Resume())
    time.sleep(0.05)
    engine.submit(Stop("test"))
    thread.join(10)
    kinds = [e.kind for e in engine.events_since(0)]
    assert kinds[:4] == ["start", "pause", "switch", "resume"]
    assert engine.state == "stopped" and len(engine.history) > 0


def test_bad_command_is_rejected_and_changes_nothing() -> None:
    engine = make_engine()
    engine.begin()
    before = engine.timeline
    engine.submit(Switch("cosine:T_max=-1"))
    engine.submit(EditParams((("gamma", 0.5),)))
    engine.step(1.0)
    assert engine.timeline is before
    rejected = [e for e in engine.events_since(0) if e.kind == "rejected"]
    assert [e.data["reason"] for e in rejected] == [
        "cosine: T_max must be > 0 (got -1)",
        "cosine: unknown key 'gamma'; allowed: T_max, eta_min, warmup, warmup_start, lr, anchor",
    ]


def test_param_groups_keep_their_ratio() -> None:
    engine = make_engine(optimizer=FakeOptimizer(0.1, 0.01))
    engine.begin()
    for _ in range(35):
        engine.step(1.0)
    g0, g1 = (g["lr"] for g in engine.optimizer.param_groups)
    assert g1 == pytest.approx(g0 / 10, rel=1e-12)


def test_run_dir_files(tmp_path: Path) -> None:
    engine = make_engine(total_epochs=3, run_dir=tmp_path, config={"seed": 1})
    engine.schedule_command(15, Switch("exp:gamma=0.5"))
    loop(engine)
    engine.finish()
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    step_rows = [r for r in rows if r["loss"]]
    epoch_rows = [r for r in rows if not r["loss"]]
    assert [int(r["step"]) for r in step_rows] == list(range(30))
    assert [float(r["lr"]) for r in step_rows] == engine.timeline.lrs(np.arange(30)).tolist()
    assert [(r["step"], r["epoch"], r["val_loss"]) for r in epoch_rows] == [
        ("10", "1.0", "0.5"),
        ("20", "2.0", "0.5"),
        ("30", "3.0", "0.5"),
    ]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").open()]
    switch = next(e for e in events if e["event"] == "switch")
    assert (switch["step"], switch["spec"]) == (15, "exp:gamma=0.5")
    assert switch["torch"] == "ExponentialLR(optimizer, gamma=0.5)"
    assert events[-1] == {**events[-1], "event": "finish", "status": "finished", "step": 30}
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["config"] == {"seed": 1} and info["versions"]["torch"]
    assert Timeline.from_dict(info["timeline"]).segments[0].spec == engine.timeline.segments[0].spec


def test_crash_in_training_is_logged_and_everything_is_on_disk(tmp_path: Path) -> None:
    engine = make_engine(run_dir=tmp_path)

    def train(e: Engine) -> None:
        e.begin()
        for _ in range(25):
            e.step(0.1)
        raise RuntimeError("CUDA out of memory (simulated)")

    thread = engine.start_thread(train)
    thread.join(10)
    assert engine.state == "error"
    assert engine.status().error == "RuntimeError: CUDA out of memory (simulated)"
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + 25
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").open()]
    assert events[-2]["event"] == "error" and "Traceback" in events[-2]["traceback"]
    assert events[-1]["status"] == "error"


def test_rows_are_on_disk_while_paused(tmp_path: Path) -> None:
    engine = make_engine(total_epochs=100, run_dir=tmp_path)
    thread = engine.start_thread(loop)
    time.sleep(0.1)
    engine.submit(Pause())
    deadline = time.time() + 5
    while engine.state != "paused" and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(PAUSE_FLUSH := 0.3)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert len(rows) - 1 >= len(engine.history) > 0, PAUSE_FLUSH
    engine.submit(Stop())
    thread.join(10)


def test_commands_serialise() -> None:
    for command in (Switch("cosine", "base"), EditParams((("T_max", 3.0),)), Pause(), Resume(), Stop("SIGHUP")):
        assert command_from_dict(json.loads(json.dumps(command.to_dict()))) == command


def test_stop_before_the_first_step() -> None:
    engine = make_engine()
    engine.submit(Stop())
    applied = loop(engine)
    engine.finish()
    assert applied == [0.1] and engine.state == "stopped"
    events = engine.events_since(0)
    assert [e.kind for e in events] == ["start", "stop", "finish"] and events[1].step == 0


def test_command_queue_takes_in_order_and_postpones_a_kept_races_steps() -> None:
    import time

    from lrwatch.protocol.commands import Pause, Resume, Stop, Switch
    from lrwatch.run.commands import CommandQueue

    commands = CommandQueue()
    started = time.monotonic()
    assert commands.take_all(wait=0.1) == [] and commands.take() is None
    assert 0.08 < time.monotonic() - started < 2
    commands.submit(Pause())
    commands.submit(Resume())
    assert [c for c, _ in commands.take_all()] == [Pause(), Resume()]
    for step, spec in ((5, "exp"), (7, "step"), (10, "cosine"), (12, "exp:gamma=0.5")):
        commands.schedule(step, Switch(spec))
    commands.schedule(5, Stop())
    commands.postpone(4, 10)  # a race trained steps 4 … 9 itself: their switches land at 10, in order
    assert [(s, c.name) for s, c in commands.scheduled()][:4] == [
        (10, "switch"),
        (10, "stop"),
        (10, "switch"),
        (10, "switch"),
    ]
    assert [c.spec for c in commands.due(10) if isinstance(c, Switch)] == ["exp", "step", "cosine"]
    assert commands.due(10) == [] and [s for s, _ in commands.scheduled()] == [12]
