"""``lrwatch export --tensorboard``: read back with TensorBoard's own event reader."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorboard")  # make test installs the extra

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lrwatch.cli.main import main
from lrwatch.record.export import ExportError, export_tensorboard
from lrwatch.record.rundir import read_metric_rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "run"
    argv = ["demo", "--headless", "--epochs", "3", "--steps-per-epoch", "20", "--switch", "1:exp:gamma=0.5"]
    assert main([*argv, "--run-dir", str(path)]) == 0
    return path


def test_the_run_reads_back_as_tensorboard_scalars_and_text(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(run_dir), "--tensorboard", str(tmp_path / "tb")]) == 0
    assert "60 lr, 60 loss/train, 120 metrics, 6 validation" in capsys.readouterr().out  # the demo's grad_norm, acc
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    rows = [r for r in read_metric_rows(run_dir / "metrics.csv") if len(r) == 4]
    lr = events.Scalars("lr")
    assert [e.step for e in lr] == [r[0] for r in rows]
    assert np.allclose([e.value for e in lr], [r[2] for r in rows], rtol=1e-6)  # float32 in TensorBoard
    assert np.allclose([e.value for e in events.Scalars("loss/train")], [r[3] for r in rows], rtol=1e-6)
    assert [e.step for e in events.Scalars("val_loss")] == [20, 40, 60]
    for name in ("grad_norm", "acc"):  # one tag per metric, its own name, every step's value
        values = [r.metrics[name] for r in rows]
        assert [e.step for e in events.Scalars(name)] == [r[0] for r in rows]
        assert np.allclose([e.value for e in events.Scalars(name)], values, rtol=1e-6)
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("events/text_summary")}
    assert "switch at step 20" in texts[20] and "exp:gamma=0.5" in texts[20]


def test_without_tensorboard_one_clear_line(run_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(ExportError, match=r"pip install 'lrwatch\[tensorboard\]'"):
        export_tensorboard(run_dir, tmp_path / "tb")
    assert main(["export", str(run_dir), "--tensorboard", str(tmp_path / "tb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tensorboard package" in err
    assert not (tmp_path / "tb").exists()
    assert main(["export", str(tmp_path), "--tensorboard", str(tmp_path / "tb")]) == 2  # not a run dir


def test_a_second_export_into_the_same_directory_refuses_and_force_replaces(
    run_dir: Path, tmp_path: Path, capsys
) -> None:
    tb = tmp_path / "tb"
    assert main(["export", str(run_dir), "--tensorboard", str(tb)]) == 0
    first = sorted(tb.glob("events.out.tfevents.*"))
    assert main(["export", str(run_dir), "--tensorboard", str(tb)]) == 2  # never doubles every point
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already holds TensorBoard events" in err and "--force" in err
    assert sorted(tb.glob("events.out.tfevents.*")) == first
    assert main(["export", str(run_dir), "--tensorboard", str(tb), "--force"]) == 0
    assert len(list(tb.glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("lr")]
    assert len(steps) == len(set(steps)) == 60
