"""The engine's fast step (most steps go a short way between planned boundaries) changes nothing a run records:
the same rows, LRs, events and divergence decisions as every step going the whole way; and metrics.csv's
batched text reads back as the row-by-row text does."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from lrwatch.protocol.commands import EditParams, Switch
from lrwatch.record.csvrows import row_text, rows_text
from lrwatch.record.rundir import parse_metrics_line
from lrwatch.run.divergence import DivergencePolicy
from lrwatch.run.engine import Engine
from lrwatch.schedule.timeline import Timeline
from tests.conftest import FakeOptimizer

K = 100


def loss_at(s: int, spike: int | None) -> float:
    """Falling fast at first (a window's mean well above its newest losses), noisy, with one spike."""
    base = 10.0 * math.exp(-s / 150) + 0.1 * (1 + 0.2 * math.sin(s))
    if s == spike:
        return math.nan if spike % 2 else base * 30
    return base


def run(tmp: Path, spike: int | None, fast: bool, monkeypatch: pytest.MonkeyPatch) -> tuple:
    with monkeypatch.context() as patch:
        if not fast:
            patch.setattr(Engine, "_plan_fast", lambda self: None)  # every step the whole way
        optimizer = FakeOptimizer(0.1, 0.05)  # a second group keeps its ratio
        timeline = Timeline.start("cosine", lr=0.1, steps_per_epoch=K, total_steps=3000)
        engine = Engine(optimizer, timeline, run_dir=tmp, divergence=DivergencePolicy(action="stop"))
        engine.schedule_command(1234, Switch("exp:gamma=0.99"))
        engine.begin()
        applied = []
        for s in range(3000):
            applied.append((optimizer.param_groups[0]["lr"], optimizer.param_groups[1]["lr"]))
            if s == 2000:
                engine.submit(EditParams((("gamma", 0.95),)))
            if not engine.step(loss_at(s, spike)):
                break
            if (s + 1) % K == 0:
                engine.end_epoch(val_loss=0.5 + s * 1e-4)
        engine.finish()
    events = [json.loads(line) for line in (tmp / "events.jsonl").read_text().splitlines()]
    for event in events:
        event.pop("time")
        event.pop("wall", None)
    history = {name: engine.history.column(name) for name in ("step", "epoch", "lr", "loss")}
    return applied, events, (tmp / "metrics.csv").read_text(), history, engine.step_index


@pytest.mark.parametrize("spike", [None, 203, 1506, 2508])
def test_the_fast_step_records_what_the_whole_way_does(
    tmp_path: Path, spike: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = run(tmp_path / "fast", spike, True, monkeypatch)
    whole = run(tmp_path / "whole", spike, False, monkeypatch)
    assert fast[0] == whole[0]  # the LRs each step used, both groups
    assert fast[1] == whole[1]  # events: switches, the edit, epochs, the divergence, the stop
    assert fast[2] == whole[2]  # metrics.csv, byte for byte
    for name in fast[3]:
        np.testing.assert_array_equal(fast[3][name], whole[3][name])
    assert fast[4] == whole[4]
    kinds = [e["event"] for e in fast[1]]
    if spike is None or spike > 2000:
        assert kinds.count("switch") == 1 and "edit" in kinds
    if spike is not None:
        divergence = next(e for e in fast[1] if e["event"] == "divergence")
        assert divergence["step"] == spike + 1 and fast[4] == spike + 1


def test_most_steps_go_the_short_way(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not a timing: the whole way is counted. A plain run reaches a boundary about once per LR block."""
    whole_way = 0
    original = Engine._step

    def counted(self: Engine, *args: object) -> bool:
        nonlocal whole_way
        whole_way += 1
        return original(self, *args)

    monkeypatch.setattr(Engine, "_step", counted)
    engine = Engine(FakeOptimizer(0.1), Timeline.start("cosine", lr=0.1, steps_per_epoch=10**6, total_steps=10**6),
                    run_dir=tmp_path)  # fmt: skip
    engine.begin()
    for _ in range(20_000):
        engine.step(1.0)
    engine.finish()
    assert whole_way < 20_000 / 200, whole_way


def test_a_command_from_another_thread_still_lands_at_the_next_boundary() -> None:
    engine = Engine(FakeOptimizer(0.1), Timeline.start("cosine", lr=0.1, steps_per_epoch=K, total_steps=10**5))
    engine.begin()
    for _ in range(500):
        engine.step(1.0)
    assert engine.fast_until > engine.step_index
    engine.submit(Switch("constant"))  # as the server's thread does
    assert engine.fast_until == 0
    engine.step(1.0)
    switch = [e for e in engine.events_since(0) if e.kind == "switch"]
    assert switch and switch[-1].step == 501


def test_batched_csv_text_reads_back_as_row_by_row() -> None:
    rng = random.Random(7)
    extra = ["grad_norm", "val_loss"]
    index, empty = {name: i for i, name in enumerate(extra)}, ",,\n"
    columns = ["step", "epoch", "lr", "loss", *extra]
    batches = [
        [(s, s / 391, rng.random() * 10 ** rng.randint(-9, 2), rng.random() * 1e3, None) for s in range(500)],
        [(s, math.nan, rng.random(), rng.random(), None) for s in range(100)],  # epochs unknown
        [(0, 0.0, 0.1, math.nan, None), (1, 0.1, 0.1, math.inf, None)],  # not finite: row by row
        [(0, 0.0, 0.1, 1.5, {"grad_norm": 2.5}), (1, 0.1, None, None, {"val_loss": 0.25})],  # metrics, epoch row
        [(s, s / 7, 0.1, 1.5 / (s + 1), {"grad_norm": rng.random()} | ({"val_loss": 3} if s % 3 else {}))
         for s in range(300)] + [(300, 300 / 7, 0.1, 0.2, None)],  # metrics, some missing, an int: by orjson
        [(0, math.nan, 0.1, 1.5, {"grad_norm": math.nan})],  # a NaN metric: row by row, written nan
        [(0, 0.0, np.float64(0.1), 1.5, None)],  # a numpy scalar: row by row
        [(0, 0.0, 1e-7, 1e16, None), (1, math.nan, 0.1, 0.2, None)],  # spelling; one NaN epoch among finite
    ]
    for rows in batches:
        batched = rows_text(rows, index, empty).splitlines()
        single = "".join(row_text(row, index, empty) for row in rows).splitlines()
        assert len(batched) == len(single) == len(rows)
        for a, b in zip(batched, single, strict=True):
            left, right = parse_metrics_line(columns, a), parse_metrics_line(columns, b)
            assert [str(x) for x in left] == [str(x) for x in right]  # NaN equal to NaN, floats exact
            assert repr(getattr(left, "metrics", None)) == repr(getattr(right, "metrics", None))  # nan reads nan
