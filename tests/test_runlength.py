"""The run's length (given any time, never guessed), the live cooldown (the run ends with it, forked from a
checkpoint of the stable phase), and plateau's reductions as logged, replayable events."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest

from lrwatch.protocol.commands import EditParams, Length, Switch
from lrwatch.record.reader import RunReader
from lrwatch.run.engine import Engine
from lrwatch.schedule.spec import LengthUnknown
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer, run_rows


def engine_of(spec: str = "constant", total: int | None = None, k: int = 10, run_dir: Path | None = None) -> Engine:
    timeline = Timeline.start(spec, lr=0.1, steps_per_epoch=k, total_steps=total)
    engine = Engine(FakeOptimizer(0.1), timeline, run_dir=run_dir)
    engine.begin()
    return engine


def reasons(engine: Engine) -> list[str]:
    return [e.data["reason"] for e in engine.events_since(0) if e.kind == "rejected"]


def test_a_fitted_default_without_the_length_is_refused_naming_it(tmp_path: Path) -> None:
    """No silent 10-step defaults: ``switch cosine`` in a run of unknown length says what is missing and changes
    nothing; once ``length`` is given, the same switch fits to it, and ``lrwatch view`` replays both."""
    engine = engine_of(run_dir=tmp_path)
    for _ in range(30):
        engine.step(1.0)
    engine.submit(Switch("cosine"))
    engine.step(1.0)
    assert engine.timeline.segments[-1].schedule.kind == "constant"
    assert "T_max is fitted to the rest of the run, whose length is unknown" in reasons(engine)[0]
    assert "lrwatch send RUN_DIR length N" in reasons(engine)[0]
    engine.submit(Length("131steps"))
    engine.submit(Switch("cosine"))
    engine.step(1.0)
    assert engine.timeline.total_steps == 131 and engine.status().total_steps == 131
    (length,) = [e for e in engine.events_since(0) if e.kind == "length"]
    assert length.data["total_steps"] == 131 and length.step == 32
    assert str(engine.timeline.segments[-1].spec) == "cosine:T_max=9.9"  # 99 steps, 10 an epoch
    engine.submit(Length("3"))  # epochs: 30 steps, already behind
    engine.submit(EditParams((("T_max", "99steps"),)))
    engine.step(1.0)
    assert "not after this step" in reasons(engine)[-1]
    assert str(engine.timeline.segments[-1].spec) == "cosine:T_max=99steps"
    engine.finish()
    replayed = RunReader(tmp_path).timeline
    assert replayed == engine.timeline and replayed.total_steps == 131


def test_watch_without_a_length_starts_constant_and_a_fitted_schedule_is_refused(tmp_path: Path) -> None:
    import torch

    import lrwatch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    monitor = lrwatch.watch(opt, steps_per_epoch=None, run_dir=tmp_path / "a")
    assert str(monitor.engine.timeline.segments[0].spec) == "constant" and monitor.total_steps is None
    monitor.close()
    with pytest.raises(LengthUnknown, match="T_max is fitted to the rest of the run"):
        lrwatch.watch(opt, steps_per_epoch=None, schedule="cosine", run_dir=tmp_path / "b")
    monitor = lrwatch.watch(opt, steps_per_epoch=None, schedule="cosine", total_steps=400, run_dir=tmp_path / "c")
    assert str(monitor.engine.timeline.segments[0].spec) == "cosine:T_max=400steps"  # no epochs: steps
    monitor.close()


def test_the_cooldown_ends_the_run_at_its_last_step_after_a_fork_checkpoint() -> None:
    """Switched in at f from the LR in force L: ``L·(1 − √(t/length))`` for t = 0 … length−1, the fork's
    checkpoint before its first step, then ``step()`` is False, a final checkpoint, state finished."""
    engine = engine_of("cosine:T_max=1000steps", total=1000)
    saved: list[tuple[str, int]] = []
    engine.checkpointer = lambda reason: saved.append((reason, engine.step_index)) or Path(f"/x/{reason}.pt")
    for _ in range(200):
        assert engine.step(1.0)
    engine.submit(Switch("cooldown:length=50steps"))  # lands at the next step boundary: f = 201
    steps = 0
    while engine.step(1.0):
        steps += 1
    assert engine.step_index == 251 and steps == 50  # step() was False after step 250, the cooldown's last
    f_lr = Timeline.start("cosine:T_max=1000steps", lr=0.1, steps_per_epoch=10).lr_at(200)
    expected = f_lr * (1 - np.sqrt(np.arange(50) / 50))
    np.testing.assert_allclose(engine.history.column("lr")[201:], expected, rtol=1e-12)
    assert saved == [("fork", 201), ("end", 251)]
    checkpoints = [(e.step, e.data["reason"]) for e in engine.events_since(0) if e.kind == "checkpoint"]
    assert checkpoints == [(201, "fork"), (251, "end")]
    assert engine.timeline.total_steps == 251 and engine.status().total_steps == 251
    engine.finish()
    assert engine.state == "finished"


def test_a_cooldown_that_is_refused_saves_nothing() -> None:
    engine = engine_of("constant")
    engine.checkpointer = lambda reason: pytest.fail("no checkpoint for a refused switch")
    engine.submit(Switch("cooldown:length=0steps"))
    engine.step(1.0)
    assert reasons(engine) == ["cooldown: length must be > 0 (got 0steps)"]


def test_plateau_reductions_are_events_the_view_replays(tmp_path: Path) -> None:
    engine = engine_of("plateau:patience=1,factor=0.5", run_dir=tmp_path, k=4)
    for metric in (1.0, 0.9, 0.95, 0.96, 0.97, 0.5, 0.6):
        for _ in range(4):
            engine.step(1.0)
        engine.end_epoch(val_loss=metric)
    drops = [e for e in engine.events_since(0) if e.kind == "plateau"]
    assert [(e.step, e.data["lr_before"], e.data["lr"]) for e in drops] == [(16, 0.1, 0.05)]
    assert engine.lr == 0.05 and engine.timeline.preview(16, 20).tolist() == [0.05] * 4
    engine.end_epoch(val_acc=0.5)  # not the metric it follows: said once
    assert any("plateau follows val_loss" in e.data.get("message", "") for e in engine.events_since(0))
    engine.finish()
    assert RunReader(tmp_path).timeline == engine.timeline


def test_send_length_is_checked_before_it_leaves(capsys: pytest.CaptureFixture[str]) -> None:
    from lrwatch.cli import main

    for bad in (["length"], ["length", "0"], ["length", "1.5steps"], ["length", "x"]):
        assert main(["send", "/nonexistent", *bad]) == 2
        assert "length takes the run's length" in capsys.readouterr().err


# -- end to end: a detached demo cools down, ends, and trains on from its fork -----------------------------
def test_a_detached_demo_cools_down_ends_and_resumes_from_its_fork(tmp_path: Path) -> None:
    from tests.test_live import detached_demo, lrwatch, run_pid, wait_for

    run_dir = tmp_path / "run"
    detached_demo(run_dir)
    try:
        sent = lrwatch("send", str(run_dir), "switch", "cooldown:length=300steps")
        assert sent.returncode == 0, sent.stderr
        switch = json.loads(sent.stdout)
        assert switch["spec"] == "cooldown:length=300steps" and switch["event"] == "switch"
        wait_for(lambda: not (run_dir / "live.json").exists(), "the run to end with its cooldown", 240)
    finally:
        if (run_dir / "live.json").exists():
            run_pid(run_dir) and __import__("os").kill(run_pid(run_dir), signal.SIGTERM)
    f = switch["step"]
    rows, _, events = run_rows(run_dir)
    lr = {step: value for step, _, value, _ in rows}
    assert max(lr) == f + 299  # the run's last step is the cooldown's
    t = np.arange(300)
    np.testing.assert_allclose([lr[f + i] for i in t], lr[f - 1] * (1 - np.sqrt(t / 300)), rtol=1e-12)
    fork = [e for e in events if e.kind == "checkpoint" and e.data["reason"] == "fork"]
    assert [e.step for e in fork] == [f] and Path(fork[0].data["path"]).name == f"checkpoint-fork-{f}.pt"
    assert (run_dir / f"checkpoint-fork-{f}.pt").exists() and (run_dir / "checkpoint.pt").exists()
    assert events[-1].kind == "finish" and events[-1].data["status"] == "finished"
    planned = Timeline.from_dict(events[0].data["timeline"])  # the stable phase, before the cooldown
    # Train on from the stable phase with a longer plan: 40 more steps from the fork, the stable phase's LRs.
    out = lrwatch("demo", "--headless", "--resume", str(run_dir / f"checkpoint-fork-{f}.pt"),
                  "--total-steps", str(f + 40), timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rows, _, _ = run_rows(run_dir)
    lr = {step: value for step, _, value, _ in rows}
    assert max(lr) == f + 39
    assert [lr[s] for s in range(f, f + 40)] == planned.lrs(np.arange(f, f + 40)).tolist()
    assert not math.isnan(rows[-1][3])
