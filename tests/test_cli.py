from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrwatch.cli.main import main
from lrwatch.schedule.timeline import Timeline


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_schedule_csv_is_the_timeline(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "schedule", "cosine:T_max=5", "--lr", "0.1", "--epochs", "10", "--steps-per-epoch", "4",
        "--switch", "6:step:step_size=1,gamma=0.5",
    )  # fmt: skip
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 40 and list(rows[0]) == ["step", "epoch", "lr"]
    expected = Timeline.start("cosine:T_max=5", lr=0.1, steps_per_epoch=4, total_steps=40).switch(
        24, "step:step_size=1,gamma=0.5"
    )
    assert [float(r["lr"]) for r in rows] == expected.lrs(np.arange(40)).tolist()
    assert rows[5]["epoch"] == "1.25"


def test_schedule_per_epoch_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "schedule", "exp:gamma=0.5", "--lr", "1", "--epochs", "3", "--steps-per-epoch", "2", "--per-epoch",
        "--format", "json",
    )  # fmt: skip
    data = json.loads(out)
    (schedule,) = data["schedules"]
    assert code == 0 and schedule["lr"] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert schedule["spec"] == "exp:gamma=0.5" and schedule["timeline"]["segments"][0]["spec"] == "exp:gamma=0.5"
    assert data["epoch"] == [0, 0.5, 1, 1.5, 2, 2.5]


def test_schedule_plot_draws_a_chart(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setenv("LINES", "12")
    code, out, _ = run_cli(
        capsys, "schedule", "step:step_size=10", "--lr", "0.1", "--epochs", "30", "--format", "plot",
        "--steps-per-epoch", "1",
    )  # fmt: skip
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "learning rate · step:step_size=10,gamma=0.1 · lr 0.1"
    assert len(lines) == 11 and all(len(_strip(line)) <= 60 for line in lines)
    assert any("0.1┤" in _strip(line) for line in lines)
    assert any("\u2801" <= c <= "\u28ff" for c in out)  # a braille line


def _strip(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["schedule", "cosine:T_max=0", "--lr", "0.1", "--epochs", "3"], "T_max must be > 0 (got 0)"),
        (["schedule", "cosine", "--epochs", "3"], "the following arguments are required: --lr"),
        (["schedule", "cosine", "--lr", "-1", "--epochs", "3"], "argument --lr: expected a number > 0 (got '-1')"),
        (["schedule", "cosine", "--lr", "0.1", "--epochs", "x"], "--epochs: expected an integer > 0 (got 'x')"),
        (["schedule", "wave", "--lr", "0.1", "--epochs", "3"], "unknown schedule 'wave'"),
        (["demo", "--switch", "abc"], "expected EPOCH:SPEC"),
        (["demo", "--switch", "3:exp:gamma=2"], "exp: gamma must be in (0, 1] (got 2)"),
        (["demo", "--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_headless_demo_end_to_end(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "lrwatch.cli", "demo", "--headless", "--epochs", "3", "--steps-per-epoch", "20",
         "--schedule", "cosine", "--switch", "1.5:exp:gamma=0.5", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("epoch ") for line in lines) == 3
    assert "  switch at step 30 (epoch 1.5): exp:gamma=0.5" in lines
    assert lines[-1].startswith("finished at step 60")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").open()]
    assert [e["event"] for e in events if e["event"] != "epoch"] == ["start", "switch", "finish"]
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert len([r for r in rows if r["loss"]]) == 60
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["device"] == "cpu" and info["config"]["switches"] == ["1.5:exp:gamma=0.5"]


def test_demo_is_deterministic_with_a_seed(tmp_path: Path) -> None:
    losses = []
    for name in ("a", "b"):
        subprocess.run(
            [sys.executable, "-m", "lrwatch.cli", "demo", "--headless", "--epochs", "1", "--steps-per-epoch", "15",
             "--seed", "3", "--run-dir", str(tmp_path / name)],
            capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        losses.append([r["loss"] for r in csv.DictReader((tmp_path / name / "metrics.csv").open())])
    assert losses[0] == losses[1]


def test_several_specs_share_one_csv_index(capsys: pytest.CaptureFixture[str]) -> None:
    specs = ["step:step_size=3,gamma=0.5", "exp:gamma=0.9", "cosine"]
    code, out, _ = run_cli(capsys, "schedule", *specs, "--lr", "0.1", "--epochs", "10", "--steps-per-epoch", "3")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["step", "epoch", "step:step_size=3,gamma=0.5", "exp:gamma=0.9", "cosine:T_max=10"]
    for spec, column in zip(specs, list(rows[0])[2:], strict=True):
        _, single, _ = run_cli(capsys, "schedule", spec, "--lr", "0.1", "--epochs", "10", "--steps-per-epoch", "3")
        alone = list(csv.DictReader(io.StringIO(single)))
        assert [r[column] for r in rows] == [r["lr"] for r in alone]
        assert [(r["step"], r["epoch"]) for r in rows] == [(r["step"], r["epoch"]) for r in alone]


def test_switch_with_several_specs_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "schedule", "exp", "cosine", "--lr", "1", "--epochs", "5", "--switch", "2:step")
    assert code == 2 and err.strip() == "lrwatch schedule: --switch applies to a single SPEC (got 2)"


def test_compare_draws_the_textbook_four(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setenv("LINES", "24")
    monkeypatch.setenv("FORCE_COLOR", "1")  # as on a terminal
    monkeypatch.delenv("NO_COLOR", raising=False)
    code, out, _ = run_cli(capsys, "compare")
    assert code == 0
    text = _strip(out)
    assert text.splitlines()[0] == "learning rate · lr 0.1 · 50 epochs"
    for spec, line in [
        ("step:step_size=10,gamma=0.5", "StepLR(optimizer, step_size=10, gamma=0.5)"),
        ("exp:gamma=0.95", "ExponentialLR(optimizer, gamma=0.95)"),
        ("cosine:T_max=50", "CosineAnnealingLR(optimizer, T_max=50)"),
        ("cosine-restarts:T_0=10,T_mult=2", "CosineAnnealingWarmRestarts(optimizer, T_0=10, T_mult=2)"),
    ]:
        assert spec in text and line in text
    for color in (39, 208, 170, 141):
        assert f"38;5;{color}m" in out  # each schedule in its own colour


def test_compare_per_epoch_csv(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "compare", "--format", "csv", "--per-epoch", "--epochs", "30")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 30
    assert float(rows[10]["step:step_size=10,gamma=0.5"]) == 0.05
    assert float(rows[10]["cosine-restarts:T_0=10,T_mult=2"]) == 0.1


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_headless_demo_stops_cleanly_on_signals(tmp_path: Path, sig: str) -> None:
    """SIGHUP stops the run only under --on-hangup stop (then its lines go to lrwatch.log: no terminal)."""
    import signal
    import time

    hangup = ["--on-hangup", "stop"] if sig == "SIGHUP" else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrwatch.cli", "demo", "--headless", "--epochs", "500", "--steps-per-epoch", "50",
         "--run-dir", str(tmp_path), *hangup],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "metrics.csv").exists() or len((tmp_path / "metrics.csv").read_text().splitlines()) < 60:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    if sig == "SIGHUP":
        err = (tmp_path / "lrwatch.log").read_text()
        assert "the terminal is gone (SIGHUP)" in err
    assert "stop at step" in err and sig in err
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").open()]
    assert events[-1]["event"] == "finish" and events[-1]["status"] == "stopped"
    steps = [int(r["step"]) for r in csv.DictReader((tmp_path / "metrics.csv").open()) if r["loss"]]
    assert steps == list(range(len(steps))) and events[-1]["step"] == len(steps)


def test_compare_plot_snapshot(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, snapshot) -> None:
    """The textbook picture at 80×24, colours included; ``--snapshot-update`` accepts an intended change."""
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    monkeypatch.setenv("FORCE_COLOR", "1")  # capsys is no terminal: colour only when forced
    monkeypatch.delenv("NO_COLOR", raising=False)
    code, out, _ = run_cli(capsys, "compare")
    assert code == 0
    assert out == snapshot


@pytest.mark.parametrize(
    ("env", "coloured"),
    [({}, False), ({"FORCE_COLOR": "1"}, True), ({"FORCE_COLOR": "0"}, False), ({"NO_COLOR": "1"}, False),
     ({"NO_COLOR": "1", "FORCE_COLOR": "1"}, False)],
)  # fmt: skip
def test_plots_are_coloured_only_on_a_terminal_or_when_forced(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], coloured: bool
) -> None:
    """``lrwatch compare | cat`` shows no escape codes; NO_COLOR wins over FORCE_COLOR, as in Rich."""
    import re

    for name in ("NO_COLOR", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    code, out, _ = run_cli(capsys, "compare")
    assert code == 0 and ("\x1b[" in out) == coloured
    if not coloured:  # the same picture as the coloured one, less its colours
        monkeypatch.setenv("FORCE_COLOR", "1")
        monkeypatch.delenv("NO_COLOR", raising=False)
        _, ansi, _ = run_cli(capsys, "compare")
        plain = [line.rstrip() for line in re.sub(r"\x1b\[[0-9;]*m", "", ansi).splitlines()]
        assert out.splitlines() == plain


def test_version_and_a_bare_lrwatch_say_what_lrwatch_is(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out == f"lrwatch {version('lrwatch')}\n"
    assert main([]) == 0
    usage = capsys.readouterr().out
    assert usage.startswith("usage: lrwatch COMMAND")
    for command in ("demo", "run", "attach", "ls", "send", "serve", "view", "export", "schedule", "compare"):
        assert f"\n    {command} " in usage, command


def test_argument_errors_read_as_english(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--epochs", "x"]) == 2
    assert "expected an integer > 0 (got 'x')" in capsys.readouterr().err
    assert main(["schedule", "cosine", "--lr", "-1", "--epochs", "3"]) == 2
    assert "expected a number > 0 (got '-1')" in capsys.readouterr().err


def test_the_same_missing_thing_gets_the_same_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    said = []
    for argv in (["send", str(missing), "pause"], ["view", "--summary", str(missing)], ["export", str(missing),
                 "--tensorboard", str(tmp_path / "tb")], ["demo", "--resume", str(missing)]):  # fmt: skip
        main(argv)
        said.append(capsys.readouterr().err)
    assert all(f"{missing}: no such directory" in err for err in said), said
    (tmp_path / "empty").mkdir()
    assert main(["send", str(tmp_path / "empty"), "pause"]) == 3
    assert "not an lrwatch run directory (no run.json)" in capsys.readouterr().err


def test_compare_fits_an_80x24_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("LINES", "24")
    assert main(["compare"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 23 and lines[0].startswith("learning rate")  # the title stays on screen, a prompt below
    assert max(len(line) for line in lines) <= 80  # no legend line wraps


def test_ls_fits_80_columns_and_wide_shows_everything() -> None:
    from lrwatch.cli.live import ls_table

    row = {"run_dir": "/very/long/path/to/a/team/share/of/runs/" + "x" * 40 + "/run-20261202", "pid": 1234567,
           "state": "running", "step": 1234567, "epoch": 2637.75, "epochs_known": True, "clients": 2,
           "schedule": "cosine-restarts:T_0=13.34,T_mult=2,eta_min=0.0001,warmup=2000steps"}  # fmt: skip
    fitted = ls_table([row, {**row, "epochs_known": False, "state": "paused"}], 80)
    assert fitted[0].split() == ["RUN", "PID", "STATE", "STEP", "EPOCH", "SCHEDULE", "ATT"]
    assert all(len(line) <= 79 for line in fitted), fitted
    assert fitted[1].startswith("…") and "/run-20261202 " in fitted[1]  # a path keeps its end: the run
    assert "1,234,567" in fitted[1] and "2637.75" in fitted[1] and "cosine-restarts:" in fitted[1]
    assert fitted[2].split()[4] == "-"  # a run without epochs counts steps only
    wide = ls_table([row], None)
    assert row["run_dir"] in wide[1] and row["schedule"] in wide[1]
