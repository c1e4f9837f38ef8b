from __future__ import annotations

import itertools
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrwatch.record.decimate import decimate
from lrwatch.record.history import Ema, MetricHistory


def test_decimate_keeps_spikes_and_bounds_points() -> None:
    y = np.zeros(100_000)
    y[12_345] = 50.0
    y[77_777] = -3.0
    x = np.arange(len(y))
    xs, ys = decimate(x, y, 200)
    assert len(xs) <= 200
    assert 50.0 in ys and -3.0 in ys
    assert xs[ys.argmax()] == 12_345
    assert np.all(np.diff(xs) > 0)


def test_decimate_short_series_is_untouched() -> None:
    x, y = np.arange(10), np.random.default_rng(0).normal(size=10)
    xs, ys = decimate(x, y, 100)
    assert np.array_equal(xs, x) and np.array_equal(ys, y)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 5000), points=st.integers(2, 400))
def test_decimate_keeps_min_and_max_of_any_series(n: int, points: int) -> None:
    y = np.random.default_rng(n).normal(size=n)
    xs, ys = decimate(np.arange(n), y, points)
    assert len(ys) <= max(points, 2) or n <= points
    assert ys.max() == y.max() and ys.min() == y.min()
    assert np.array_equal(ys, y[xs])


def test_decimate_survives_nan() -> None:
    y = np.full(1000, np.nan)
    y[500] = 1.0
    _, ys = decimate(np.arange(1000), y, 20)
    assert 1.0 in ys


def test_history_grows_and_snapshots_concurrently() -> None:
    history = MetricHistory(capacity=4)

    def writer() -> None:
        for i in range(20_000):
            history.append(i, i / 100, 0.1, float(i % 7))

    thread = threading.Thread(target=writer)
    thread.start()
    sizes = []
    while thread.is_alive():
        snap = history.snapshot(100)
        assert len(snap.lr) <= 100 and len(snap.steps_loss) == len(snap.loss)
        sizes.append(snap.length)
    thread.join()
    assert len(history) == 20_000
    assert sizes == sorted(sizes)
    assert history.column("step").tolist() == list(range(20_000))
    assert history.last() == {"step": 19_999, "epoch": 199.99, "lr": 0.1, "loss": float(19_999 % 7)}


def test_history_snapshot_window_and_validation() -> None:
    history = MetricHistory()
    for i in range(1000):
        history.append(i, i / 100, 0.1, 1.0)
        if i % 100 == 99:
            history.append_epoch(i + 1, (i + 1) / 100, {"val_loss": 0.5, "val_acc": 0.9})
    snap = history.snapshot(50, since_step=800)
    assert snap.steps_lr[0] >= 800
    assert snap.val["val_loss"][0].tolist() == [800, 900, 1000]


def reference_ema(x: np.ndarray, w: float) -> np.ndarray:
    out, last = [], np.nan
    for v in x:
        if np.isfinite(v):
            last = v if np.isnan(last) else w * last + (1 - w) * v
        out.append(last)
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(
    w=st.sampled_from([0.0, 0.5, 0.9, 0.99, 0.999]),
    chunks=st.lists(st.integers(0, 300), min_size=1, max_size=5),
)
def test_ema_incremental_equals_recurrence(w: float, chunks: list[int]) -> None:
    rng = np.random.default_rng(len(chunks))
    x = rng.normal(size=sum(chunks)) + 5
    x[rng.random(len(x)) < 0.02] = np.nan
    ema = Ema(w)
    pos = 0
    for size in chunks:
        ema.extend(x[pos : pos + size])
        pos += size
    ref = reference_ema(x, w)
    if w == 0:
        ref = x
    np.testing.assert_allclose(ema.series(), ref, rtol=1e-9, equal_nan=True)


@pytest.mark.parametrize("w", [0.05, 0.5, 0.9, 0.99, 0.999])
def test_ema_long_chunks_stay_exact(w: float) -> None:
    """A series longer than the longest chunk (8,192 rows at 0.9 and up), values over six decades."""
    rng = np.random.default_rng(1)
    x = np.exp(rng.normal(size=40_000) * 3)
    x[rng.random(len(x)) < 0.01] = np.nan
    ema = Ema(w)
    ema.extend(x[:12_345])
    ema.extend(x[12_345:])
    np.testing.assert_allclose(ema.series(), reference_ema(x, w), rtol=1e-9, equal_nan=True)


@settings(max_examples=60, deadline=None)
@given(
    w=st.sampled_from([0.0, 0.9, 0.99]),
    chunks=st.lists(st.integers(0, 700), min_size=1, max_size=4),
    start=st.integers(0, 400),
    columns=st.integers(2, 150),
    lead_nans=st.integers(0, 30),
)
def test_ema_column_means_are_the_mean_of_each_run(
    w: float, chunks: list[int], start: int, columns: int, lead_nans: int
) -> None:
    rng = np.random.default_rng(sum(chunks))
    x = rng.normal(size=sum(chunks)) + 5
    x[:lead_nans] = np.nan  # the EMA is NaN until the first finite loss
    ema = Ema(w)
    pos = 0
    for size in chunks:
        ema.extend(x[pos : pos + size])
        pos += size
    n = len(x)
    start = min(start, n)
    rows, means = ema.column_means(start, columns)
    values = ema.series()
    if n - start <= columns:
        assert np.array_equal(rows, np.arange(start, n))
        np.testing.assert_array_equal(means, values[start:n])
        return
    assert len(rows) == columns and np.all(np.diff(rows) > 0)
    edges = np.linspace(start, n, columns + 1).round().astype(int)
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        run = values[lo:hi]
        assert lo <= rows[i] < hi
        if np.isfinite(run).any():
            assert means[i] == pytest.approx(np.nanmean(run), rel=1e-9)
        else:
            assert np.isnan(means[i])
