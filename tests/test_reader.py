"""Run directories read back: finished, growing, cut off by a crash, corrupt; lrwatch view."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lrwatch.app import LRWatchApp
from lrwatch.app.compare import CompareRunsApp
from lrwatch.app.widgets import Chart
from lrwatch.cli.main import main
from lrwatch.protocol.commands import EditParams, Switch
from lrwatch.record.reader import FileRunSource, RunDirError, RunReader
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer
from tests.test_app import quit_app

K = 10


def write_run(run_dir: Path, steps: int = 60, finish: bool = True, spec: str = "cosine") -> Engine:
    engine = Engine(
        FakeOptimizer(0.1), Timeline.start(spec, lr=0.1, steps_per_epoch=K, total_steps=100), run_dir=run_dir
    )
    engine.schedule_command(25, Switch("exp:gamma=0.5"))
    engine.schedule_command(41, EditParams((("gamma", 0.8),)))
    engine.begin()
    for s in range(steps):
        engine.step(1.0 / (s + 1))
        if (s + 1) % K == 0:
            engine.end_epoch(val_loss=0.5 - s / 1000, val_acc=0.8)
    if finish:
        engine.finish()
    else:
        engine.log.flush()
    return engine


def test_a_finished_run_reads_back_exactly(tmp_path: Path) -> None:
    engine = write_run(tmp_path)
    reader = RunReader(tmp_path)
    assert reader.status == "finished" and reader.skipped == [] and reader.incomplete_tail() is None
    assert np.array_equal(reader.history.column("lr"), engine.history.column("lr"))
    assert reader.timeline == engine.timeline  # replayed from the events: the same switches and edits
    steps, _, val = reader.history.validation()
    assert steps.tolist() == [10, 20, 30, 40, 50, 60] and val["val_loss"][0] == 0.5 - 9 / 1000


def test_a_growing_run_is_followed(tmp_path: Path) -> None:
    engine = Engine(FakeOptimizer(0.1), Timeline.start("cosine:T_max=4", lr=0.1, steps_per_epoch=K), run_dir=tmp_path)
    engine.begin()
    for _ in range(5):
        engine.step(1.0)
    engine.log.flush()
    reader = RunReader(tmp_path)
    assert len(reader.history) == 5 and reader.status == "running"
    assert reader.poll() is False
    for _ in range(7):
        engine.step(1.0)
    engine.submit(Switch("step:step_size=2"))
    engine.step(1.0)
    engine.log.flush()
    assert reader.poll() is True
    assert len(reader.history) == 13 and reader.timeline == engine.timeline
    engine.finish()
    reader.poll()
    assert reader.status == "finished"


def test_a_line_cut_off_by_a_crash_is_skipped_and_said(tmp_path: Path) -> None:
    write_run(tmp_path, finish=False)
    with (tmp_path / "metrics.csv").open("a") as f:
        f.write("60,6.0,0.0")  # the process died mid-write
    with (tmp_path / "events.jsonl").open("a") as f:
        f.write('{"event": "swi')
    reader = RunReader(tmp_path)
    assert len(reader.history) == 60
    assert reader.incomplete_tail() == (
        "metrics.csv: an incomplete last line (10 bytes) is skipped; "
        "events.jsonl: an incomplete last line (14 bytes) is skipped"
    )


def test_corrupt_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    write_run(tmp_path)
    lines = (tmp_path / "metrics.csv").read_text().splitlines(keepends=True)
    lines[3] = "garbage\n"
    lines[5] = "5,0.5,x,1.0,,\n"
    (tmp_path / "metrics.csv").write_text("".join(lines))
    with (tmp_path / "events.jsonl").open("a") as f:
        f.write("not json\n")
    reader = RunReader(tmp_path)
    assert len(reader.history) == 58
    assert reader.skipped == [
        "metrics.csv line 4: 1 fields, expected 6",
        "metrics.csv line 6: could not convert string to float: 'x'",
        "events.jsonl line 11: not an event (JSONDecodeError)",
    ]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "not an lrwatch run directory"),
        (lambda p: [(p / "metrics.csv").write_text(""), (p / "events.jsonl").write_text("")], "has no header"),
        (lambda p: [(p / "metrics.csv").write_text("a,b\n"), (p / "events.jsonl").write_text("")], "header is not"),
    ],
)
def test_not_a_run_directory(tmp_path: Path, setup, message: str) -> None:
    setup(tmp_path)
    with pytest.raises(RunDirError, match=message):
        RunReader(tmp_path)


def test_view_summary_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_run(tmp_path / "a")
    write_run(tmp_path / "b", spec="step:step_size=2")
    with (tmp_path / "b" / "metrics.csv").open("a") as f:
        f.write("61,6.1")
    assert main(["view", "--summary", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "a: finished, 60 steps, val_loss 0.4410 (best 0.4410), cosine:T_max=10 → exp:gamma=0.5 → exp:gamma=0.8",
        "b: finished, 60 steps, val_loss 0.4410 (best 0.4410), step:step_size=2,gamma=0.1 → exp:gamma=0.5 → "
        "exp:gamma=0.8",
    ]
    assert err.strip() == "skipped: b: metrics.csv: an incomplete last line (6 bytes) is skipped"
    assert main(["view", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err


async def test_view_one_run_read_only(tmp_path: Path) -> None:
    write_run(tmp_path)
    source = FileRunSource(RunReader(tmp_path))
    submitted: list = []
    source.submit = submitted.append  # what the keys would send, were the app not read-only
    app = LRWatchApp(source, None, fps=4)
    async with app.run_test(size=(100, 30)) as pilot:
        from tests.conftest import app_wait_for

        await app_wait_for(lambda: "finished" in str(app.screen.query_one("#status").render()), pilot)
        assert "exp:gamma=0.8" in str(app.screen.query_one("#schedule").render())
        for key in ("e", "c", "space", "k", "plus", "a"):
            await pilot.press(key)
        assert submitted == []
        assert len(app.source.events_since(0)) == len(json.loads("[" + ",".join(
            (tmp_path / "events.jsonl").read_text().splitlines()) + "]"))  # fmt: skip
        await quit_app(app, pilot)
    assert app.return_code == 0


async def test_view_several_runs_overlaid(tmp_path: Path) -> None:
    for name, spec in (("a", "cosine"), ("b", "step:step_size=2")):
        write_run(tmp_path / name, spec=spec)
    app = CompareRunsApp([RunReader(tmp_path / "a"), RunReader(tmp_path / "b")])
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        runs = str(app.screen.query_one("#runs").render())
        assert "a" in runs and "step:step_size=2,gamma=0.1" in runs
        frames = app.screen.query_one("#loss-chart", Chart).frames
        await pilot.press("v")
        assert app.view.show_val and "validation" in str(app.screen.query_one("#loss-chart").border_title)
        assert app.screen.query_one("#loss-chart", Chart).frames > frames
        await pilot.press("q")
