from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_own_loop_example(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["own_loop.py", "--epochs", "3", "--steps-per-epoch", "10", "--switch-at", "1", "--run-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "demo" / "own_loop.py"), run_name="__main__")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 0, Current LR: 0.090953"  # the switch at step 10 starts from lr(9) = 0.1·0.9^0.9
    assert out[-1] == f"finished; run dir {tmp_path}"
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").open()]
    switch = next(e for e in events if e["event"] == "switch")
    assert (switch["step"], switch["spec"]) == (10, "cosine:T_max=2")
