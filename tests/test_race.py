"""The race: candidate schedules trained from one snapshot of the live run, on the same batches.

Proven the way a user would lean on it: keeping a candidate equals a fresh run scripted with that switch
at the fork, step for step; not keeping leaves the run as if there had been no race; two races from one
snapshot give the same numbers; the keys, ``lrwatch send`` and the refusals.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lrwatch
from lrwatch.demo_task import DemoConfig, DemoTask
from lrwatch.protocol.commands import Race
from lrwatch.record.rundir import read_metric_rows
from tests.conftest import app_wait_for

CONFIG = DemoConfig(epochs=3, train_size=4000, val_size=500, hidden=32, device="cpu")


def run_demo(run_dir: Path, mode: str, fork_epoch: float = 1.3, horizon: int = 17) -> np.ndarray:
    """The demo's loop for 3 epochs: ``plain``; ``scripted`` (exp:gamma=0.5 from the fork); ``keep`` and
    ``restore`` (a race at the fork keeping that candidate, or none). Its (step, lr, loss) rows."""
    task = DemoTask(CONFIG)
    k = CONFIG.steps
    monitor = lrwatch.watch(
        task.optimizer, model=task.model, epochs=3, steps_per_epoch=k, lr=CONFIG.lr, run_dir=run_dir,
        switches=[f"{fork_epoch}:exp:gamma=0.5"] if mode == "scripted" else [],
        train_step=task.train_step, batches=task.batches, evaluate=lambda: task.evaluate()[0],
    )  # fmt: skip
    batches, fork, raced = task.batches(0), round(fork_epoch * k), False
    while (step := monitor.step_index) < 3 * k:
        if step == fork and mode in ("keep", "restore") and not raced:
            raced = True
            result = monitor.race(["exp:gamma=0.5"], steps=horizon, keep=1 if mode == "keep" else "none")
            assert [c["name"] for c in result["candidates"]] == ["continue", "exp"]
            batches = task.batches(monitor.step_index)  # a kept candidate moved the run H steps on
            continue
        monitor.step(task.train_step(next(batches)))
    monitor.close()
    rows = [r for r in read_metric_rows(run_dir / "metrics.csv") if len(r) == 4]
    return np.array([(r[0], r[2], r[3]) for r in rows])


def test_keeping_a_candidate_equals_a_run_scripted_with_that_switch_and_restoring_equals_no_race(
    tmp_path: Path,
) -> None:
    plain, scripted = run_demo(tmp_path / "plain", "plain"), run_demo(tmp_path / "scripted", "scripted")
    kept, restored = run_demo(tmp_path / "keep", "keep"), run_demo(tmp_path / "restore", "restore")
    assert len(kept) == len(plain) == 3 * CONFIG.steps
    assert np.array_equal(kept[:, 0], np.arange(3 * CONFIG.steps))  # every step once, the race's in place
    assert np.array_equal(kept, scripted)  # bit for bit: steps, LRs and losses
    assert np.array_equal(restored, plain)
    assert not np.array_equal(kept, plain)
    race_dir = tmp_path / "keep" / "races" / "1"
    assert sorted(p.name for p in race_dir.iterdir()) == ["0-continue.csv", "1-exp.csv"]
    exp_rows = [r for r in read_metric_rows(race_dir / "1-exp.csv")]
    fork = round(1.3 * CONFIG.steps)
    assert [r[0] for r in exp_rows] == list(range(fork, fork + 17))
    assert np.array_equal(np.array([(r[0], r[2], r[3]) for r in exp_rows]), scripted[fork : fork + 17])
    events = (tmp_path / "keep" / "events.jsonl").read_text().splitlines()
    kinds = [line.split('"')[3] for line in events]
    assert kinds.index("race") < kinds.index("race_end") and "switch" in kinds[kinds.index("race") :]


def test_two_races_from_one_snapshot_give_identical_numbers_and_weights_come_back_bit_for_bit(tmp_path: Path) -> None:
    task = DemoTask(CONFIG)
    monitor = lrwatch.watch(
        task.optimizer, model=task.model, epochs=3, steps_per_epoch=CONFIG.steps, run_dir=tmp_path / "run",
        train_step=task.train_step, batches=task.batches, evaluate=task.evaluate,
    )  # fmt: skip
    batches = task.batches(0)
    for _ in range(25):
        monitor.step(task.train_step(next(batches)))
    weights = {k: v.clone() for k, v in task.model.state_dict().items()}
    momentum = [s["momentum_buffer"].clone() for s in task.optimizer.state.values()]
    rng = torch.get_rng_state()
    first, second = monitor.race(steps=12), monitor.race(steps=12)
    assert first["candidates"][0]["spec"] == "cosine:T_max=3" and len(first["candidates"]) == 5
    for a, b in zip(first["candidates"], second["candidates"], strict=True):
        assert a["curve"] == b["curve"] and a["val_loss"] == b["val_loss"] and a["train_loss"] == b["train_loss"]
        assert math.isfinite(a["val_loss"]) and a["steps"] == 12
    assert first["candidates"][0]["delta_val"] == 0.0
    assert all(torch.equal(weights[k], v) for k, v in task.model.state_dict().items())
    buffers = [s["momentum_buffer"] for s in task.optimizer.state.values()]
    assert all(torch.equal(m, b) for m, b in zip(momentum, buffers, strict=True))
    assert torch.equal(rng, torch.get_rng_state()) and monitor.step_index == 25
    assert task.optimizer.param_groups[0]["lr"] == monitor.engine.timeline.lr_at(25)
    best = monitor.race(steps=12, keep="best")
    assert monitor.step_index == 37
    chosen = best["candidates"][best["best"]]
    assert chosen["val_loss"] == min(c["val_loss"] for c in best["candidates"])
    assert str(monitor.engine.timeline.segment_at(37).spec) == chosen["spec"]
    monitor.close()


def test_a_kept_race_across_an_epoch_end_keeps_that_epochs_validation_row(tmp_path: Path) -> None:
    """The demo's loop writes a validation row when ``step_index`` lands on an epoch end; a kept race that
    jumps over one gets it from the race itself, evaluated at that boundary, in step order."""
    config = DemoConfig(epochs=2, train_size=1024, val_size=128, batch_size=64, hidden=16, device="cpu")
    task = DemoTask(config)
    k = config.steps
    monitor = lrwatch.watch(task.optimizer, model=task.model, epochs=2, steps_per_epoch=k, run_dir=tmp_path / "run",
                            train_step=task.train_step, batches=task.batches, evaluate=task.evaluate)  # fmt: skip
    batches = task.batches(0)
    for _ in range(k - 3):
        monitor.step(task.train_step(next(batches)))
    monitor.race(["exp:gamma=0.5"], steps=6, keep=1)  # steps k-3 … k+2: epoch 1 ends inside
    assert monitor.step_index == k + 3
    monitor.close()
    epochs = [r for r in read_metric_rows(tmp_path / "run" / "metrics.csv") if len(r) == 3]
    assert [r[0] for r in epochs] == [k] and math.isfinite(epochs[0][2]["val_loss"])
    steps = [r[0] for r in read_metric_rows(tmp_path / "run" / "metrics.csv") if len(r) == 4]
    assert steps == list(range(k + 3))


def test_refusals_say_why_and_change_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lrwatch.run import race

    task = DemoTask(CONFIG)
    monitor = lrwatch.watch(task.optimizer, model=task.model, epochs=3, steps_per_epoch=CONFIG.steps,
                            run_dir=tmp_path / "run", train_step=task.train_step, batches=task.batches)  # fmt: skip
    monitor.step(task.train_step(next(task.batches(0))))
    monkeypatch.setattr(race, "available_ram", lambda: 100_000)
    # continuing and the comparison set's four (cosine, the schedule in force, gives way to linear): 5 candidates
    with pytest.raises(ValueError, match=r"of 5 candidates needs 6 snapshots × .* over the budget \(25% of 0.1 MB"):
        monitor.race()
    monkeypatch.undo()
    with pytest.raises(ValueError, match="unknown schedule 'warp'"):
        monitor.race(["warp:speed=9"])
    assert monitor.step_index == 1 and not (tmp_path / "run" / "races").exists()
    no_eval = monitor.race(["step"], steps=5, keep="best")  # no evaluate=: ranked by train loss
    assert not no_eval["evaluated"] and math.isnan(no_eval["candidates"][0]["val_loss"])
    monitor.close()
    bare = lrwatch.watch(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), steps_per_epoch=1,
                         run_dir=tmp_path / "bare")  # fmt: skip
    with pytest.raises(ValueError, match="train_step=, batches=, model="):
        bare.race()
    bare.engine.submit(Race())
    bare.step(1.0)
    assert "train_step=, batches=, model=" in bare.engine.events_since(0)[-1].data["reason"]
    bare.close()


async def test_f_races_in_the_live_monitor_the_table_keeps_the_choice_and_escape_cancels(tmp_path: Path) -> None:
    from textual.widgets import DataTable

    from lrwatch.app import LRWatchApp
    from lrwatch.app.screens import RaceScreen
    from lrwatch.live.host import Host
    from lrwatch.protocol.commands import Race

    config = DemoConfig(train_size=2048, val_size=256, batch_size=64, hidden=32, device="cpu", epochs=100_000)
    app = LRWatchApp(None, DemoTask(config).train, host=Host(headless=False, run_dir=tmp_path / "run", log=None), fps=4)

    def events(kind: str) -> list:
        return [e for e in app.source.events_since(0) if e.kind == kind]

    async with app.run_test(size=(100, 30)) as pilot:
        await app_wait_for(lambda: app.source is not None and app.source.status().step > 40, pilot, timeout=60.0)
        # One candidate shown (as the range test's enter shows one): the race is continuing against it. A fitted
        # kind would equal continuing over 32 steps of a 100,000-epoch run, and is not raced twice.
        app._show_candidate("cosine:T_max=2")
        await pilot.press("f")
        await app_wait_for(lambda: isinstance(app.screen, RaceScreen), pilot, timeout=60.0)
        await app_wait_for(lambda: app.screen.query(DataTable) and app.screen.query_one(DataTable).row_count, pilot)
        result = events("race")[-1].data
        assert [c["name"] for c in result["candidates"]] == ["continue", "cosine"] and result["horizon"] == 32
        table = app.screen.query_one(DataTable)
        assert table.row_count == 2 and table.cursor_row == result["best"]
        await pilot.press("up" if table.cursor_row else "down")
        choice = table.cursor_row
        await pilot.press("enter")
        await app_wait_for(lambda: events("race_end"), pilot, timeout=60.0)
        end = events("race_end")[-1]
        assert end.data["kept"] == choice and end.step == result["fork"] + 32
        await app_wait_for(lambda: app.source.status().step > end.step + 5, pilot, timeout=60.0)
        steps = app.source.history.column("step")
        assert np.array_equal(steps, np.arange(len(steps)))  # the kept steps are the run's, each once
        await pilot.press("escape")  # clears the candidate shown
        app.source.submit(Race(steps=1_000_000))
        await app_wait_for(
            lambda: "race 2: 1/5 continue " in str(app.monitor_screen.query_one("#status").render()),
            pilot,
            timeout=60.0,
        )
        await pilot.press("escape")
        await app_wait_for(lambda: len(events("race_end")) == 2, pilot, timeout=60.0)
        assert events("race_end")[-1].data["outcome"] == "cancelled" and not events("race")[1:]
        await pilot.press("q")
        await app_wait_for(lambda: app.return_code is not None, pilot, timeout=20)


def test_send_race_to_a_detached_demo_restores_keeps_best_and_sigterm_stops_from_the_snapshot(tmp_path: Path) -> None:
    import json
    import os
    import signal

    from lrwatch.run.checkpoints import load_checkpoint
    from tests.test_live import detached_demo, events, run_pid, wait_for
    from tests.test_live import lrwatch as cli

    run_dir = tmp_path / "run"
    detached_demo(run_dir)
    pid = run_pid(run_dir)
    try:
        sent = cli("send", str(run_dir), "race", "exp:gamma=0.9", "--race-steps", "30")
        assert sent.returncode == 0, sent.stderr
        assert json.loads(sent.stdout)["event"] == "race_start" and "2 candidates × 30 steps" in sent.stderr
        wait_for(lambda: [e for e in events(run_dir) if e["event"] == "race_end"], "the race to end")
        race, end = (next(e for e in events(run_dir) if e["event"] == kind) for kind in ("race", "race_end"))
        assert not race["awaiting"] and end["kept"] == -1 and end["step"] == race["fork"]  # no monitor: restored
        assert len(list((run_dir / "races" / "1").iterdir())) == 2
        assert cli("send", str(run_dir), "race", "--keep", "best", "--race-steps", "30").returncode == 0
        wait_for(lambda: len([e for e in events(run_dir) if e["event"] == "race_end"]) == 2, "the second race")
        race, end = ([e for e in events(run_dir) if e["event"] == kind][-1] for kind in ("race", "race_end"))
        assert end["kept"] == race["best"] >= 0 and end["step"] == race["fork"] + 30
        assert cli("send", str(run_dir), "race", "--keep", "all").returncode == 2
        assert cli("send", str(run_dir), "pause", "--keep", "best").returncode == 2
        assert cli("send", str(run_dir), "race", "warp").returncode == 2
        assert cli("send", str(run_dir), "race-end").returncode == 1  # refused: no race is running
        assert cli("send", str(run_dir), "race", "--race-steps", "1000000").returncode == 0
        wait_for(lambda: len([e for e in events(run_dir) if e["event"] == "race_start"]) == 3, "the third race")
        fork = [e for e in events(run_dir) if e["event"] == "race_start"][-1]["step"]
        time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not (run_dir / "live.json").exists(), "the run to end", 15)
    finally:
        if (run_dir / "live.json").exists():
            os.kill(pid, signal.SIGKILL)
    end = [e for e in events(run_dir) if e["event"] == "race_end"][-1]
    assert end["outcome"] == "stop" and end["kept"] == -1
    assert events(run_dir)[-1]["event"] == "finish" and events(run_dir)[-1]["step"] == fork
    assert load_checkpoint(run_dir)["lrwatch"]["step"] == fork  # the snapshot's state, saved


async def test_lrwatch_view_draws_the_races_candidates_from_their_fork(tmp_path: Path) -> None:
    from lrwatch.app import LRWatchApp
    from lrwatch.app.charts import RACE_COLORS
    from lrwatch.record.reader import FileRunSource, RunReader

    run_demo(tmp_path / "run", "keep")
    app = LRWatchApp.read_only(FileRunSource(RunReader(tmp_path / "run")))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.5)
        fork = round(1.3 * CONFIG.steps)
        drawn = [(f, h, [name for name, _, _ in named]) for f, h, named in app.races]
        assert drawn == [(fork, 17, ["continue", "exp"])]
        chart = app.monitor_screen.query_one("#loss-chart")
        colors = {seg.style.color.number for row in chart._rows for seg in row if seg.style and seg.style.color}
        assert RACE_COLORS["exp"] in colors  # drawn over continuing's: 17 steps of this small run barely differ
        assert all(f"━ {name}" in str(chart.border_subtitle) for name in ("continue", "exp"))
        assert str(app.source.timeline.segment_at(fork).spec) == "exp:gamma=0.5"  # the kept switch, replayed


async def test_f_without_train_step_says_what_is_missing_in_one_line() -> None:
    from tests.test_snapshots import deterministic_app

    app = deterministic_app()
    said: list[str] = []
    app.notify = lambda message, **_options: said.append(message)  # what the user is told, in order
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("f")
        app.source.step(1.0)  # the step boundary where the run answers
        await pilot.pause(1.0)
        missing = "no race here: it needs lrwatch.watch(..., train_step=, batches=, model=)"
        assert said[0].startswith("Race: continuing against the comparison set") and said[-1] == missing
        assert not app.source.events_since(0)[-1].data.get("race") and app.source.step_index == 12 * 40 + 1


def test_a_race_end_queued_behind_its_race_cancels_it_at_the_first_step(tmp_path: Path) -> None:
    """Commands are applied one at a time at a boundary: a race-end sent right after its race reaches the race."""
    from lrwatch.protocol.commands import Race, RaceEnd

    task = DemoTask(CONFIG)
    monitor = lrwatch.watch(task.optimizer, model=task.model, epochs=3, steps_per_epoch=CONFIG.steps,
                            run_dir=tmp_path / "run", train_step=task.train_step, batches=task.batches)  # fmt: skip
    monitor.engine.submit(Race(steps=3000))  # were the race-end not seen, it would end by itself: "restored"
    monitor.engine.submit(RaceEnd(-1))
    started = time.monotonic()
    assert monitor.step(task.train_step(next(task.batches(0))))
    end = [e for e in monitor.engine.events_since(0) if e.kind == "race_end"]
    assert end and end[0].data["outcome"] == "cancelled" and time.monotonic() - started < 30
    monitor.close()
