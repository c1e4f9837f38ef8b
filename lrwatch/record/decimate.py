"""Min/max decimation: what a chart or a snapshot keeps of a long series, spikes included.

:func:`decimate` keeps each bucket's min and max; :class:`BlockExtrema` summarises a growing series per
block of :data:`BLOCK` rows, so that :func:`decimate_series` of a million rows costs about rows ÷ 256.
"""

from __future__ import annotations

import numpy as np


def decimate(x: np.ndarray, y: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` points of ``(x, y)``: per bucket the min and the max, in x order.

    Spikes survive (a bucket's extreme is always kept); NaNs are kept only where a bucket has
    nothing else.
    """
    n = len(y)
    if n <= max_points or max_points < 2:
        return x, y
    buckets = max_points // 2
    size = -(-n // buckets)
    buckets = -(-n // size)
    pad = size * buckets - n
    grid = np.concatenate([y, np.full(pad, np.nan)]) if pad else y
    grid = grid.reshape(buckets, size)
    missing = np.isnan(grid)
    lo = np.where(missing, np.inf, grid).argmin(axis=1)
    hi = np.where(missing, -np.inf, grid).argmax(axis=1)
    offsets = np.arange(buckets)[:, None] * size
    idx = (offsets + np.sort(np.stack([lo, hi], axis=1), axis=1)).ravel()
    idx = np.unique(idx[idx < n])
    return x[idx], y[idx]


BLOCK = 256


class BlockExtrema:
    """Min and max (with their row) of every complete block of ``BLOCK`` rows of a growing series.

    A snapshot of a long range decimates these block extrema instead of the raw rows, so its cost
    grows with ``rows / BLOCK`` (about 4,000 at a million steps), and a bucket's min and max are
    still exactly the series' own.
    """

    def __init__(self) -> None:
        self.rows = np.empty((0, 2), dtype=np.int64)
        self.values = np.empty((0, 2), dtype=np.float64)
        self.blocks = 0

    def update(self, series: np.ndarray, n: int) -> None:
        """Summarise the blocks of ``series[:n]`` completed since the last call."""
        complete = n // BLOCK
        if complete <= self.blocks:
            return
        grid = series[self.blocks * BLOCK : complete * BLOCK].reshape(-1, BLOCK)
        missing = np.isnan(grid)
        lo = np.where(missing, np.inf, grid).argmin(axis=1)
        hi = np.where(missing, -np.inf, grid).argmax(axis=1)
        first = np.minimum(lo, hi)
        second = np.maximum(lo, hi)
        base = (np.arange(self.blocks, complete) * BLOCK)[:, None]
        rows = base + np.stack([first, second], axis=1)
        values = np.take_along_axis(grid, np.stack([first, second], axis=1), axis=1)
        self.rows = np.concatenate([self.rows, rows])
        self.values = np.concatenate([self.values, values])
        self.blocks = complete

    def candidates(self, series: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows and values standing for ``series[start:stop]``: raw at the ragged ends, block extrema between."""
        first_block = -(-start // BLOCK)
        last_block = min(stop // BLOCK, self.blocks)
        if last_block <= first_block:
            rows = np.arange(start, stop)
            return rows, series[start:stop].copy()
        head = np.arange(start, first_block * BLOCK)
        tail = np.arange(last_block * BLOCK, stop)
        rows = np.concatenate([head, self.rows[first_block:last_block].ravel(), tail])
        values = np.concatenate([series[head], self.values[first_block:last_block].ravel(), series[tail]])
        return rows, values


def decimate_series(
    series: np.ndarray, extrema: BlockExtrema, start: int, stop: int, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, values)`` of ``series[start:stop]`` at most ``max_points``, min/max kept, cost O(rows/BLOCK)."""
    if stop - start <= BLOCK * max(max_points, 2):
        rows = np.arange(start, stop)
        return decimate(rows, series[start:stop].copy(), max_points)
    rows, values = extrema.candidates(series, start, stop)
    return decimate(rows, values, max_points)
