"""Numpy versions of plotext 5's per-point inner loops, installed in place of the originals.

A chart's build time in plotext 5 is mostly four pure-Python loops that run once per braille
dot a line crosses: data → canvas coordinates (``get_matrix_data``), the dots between two points
(``get_lines``/``get_line``), dots → braille cells (``hd_group``) and the blank matrices
(``matrix_class.set_matrices``). Each function here computes the *same lists* as plotext's (the
same IEEE operations in the same order, the same first-seen order of cells), element for element;
``tests/test_plotext_fast.py`` checks that on random input and on whole charts. Input the fast path
does not cover (``None``, NaN, strings for dates, mixed markers in one series) goes to plotext's
own function, unchanged.

Measured on a 124×23 chart of 10⁶ steps (``make bench``): these loops were ~60% of a build.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import plotext
import plotext._matrix as plotext_matrix
import plotext._utility as ut

_ROUND_SCALE = 10**8
_ROUND_BACK = 10 ** (-8)  # the float plotext's ``round(n, 8)`` multiplies by, computed the same way

ORIGINALS: dict[str, Callable[..., Any]] = {}


def _int_array(values: list) -> np.ndarray | None:
    """``values`` as int64 when every one is a Python int (plotext's canvas coordinates), else None."""
    if not values:
        return None
    array = np.asarray(values)
    return array if array.dtype.kind == "i" else None


def get_matrix_data(data: list, lim: list, bins: int) -> list:
    """Data → canvas coordinate: ``floor(round(0.5 + (bins − 1)(v − lo)/(hi − lo), 8))``."""
    if not data:
        return ORIGINALS["get_matrix_data"](data, lim, bins)
    try:
        values = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):  # strings (dates) or None
        return ORIGINALS["get_matrix_data"](data, lim, bins)
    if values.shape != (len(data),) or not np.isfinite(values).all():
        return ORIGINALS["get_matrix_data"](data, lim, bins)
    n = (0.5 + (bins - 1) * (values - lim[0]) / (lim[1] - lim[0])) * _ROUND_SCALE
    floor = np.floor(n)
    rounded = np.where(n - floor < 0.5, floor, np.ceil(n)) * _ROUND_BACK
    return np.floor(rounded).astype(np.int64).tolist()


def get_lines(x: list, y: list, *other: list) -> list:
    """Every dot on the straight lines between consecutive points, with each point's marker/colour.

    Segment ``(x0, y0) → (x1, y1)`` gives ``a = max(|Δx|, |Δy|) + 1`` dots ``int(x0 + i·(x1 − x0)/(a − 1))``
    (and the same in y), all but the last; the final point closes the line.
    """
    xs, ys = _int_array(x), _int_array(y)
    if xs is None or ys is None or len(xs) < 2 or len(xs) != len(ys) or any(len(o) != len(x) for o in other):
        return ORIGINALS["get_lines"](x, y, *other)
    x0, x1, y0, y1 = xs[:-1], xs[1:], ys[:-1], ys[1:]
    dots = np.maximum(np.abs(x1 - x0), np.abs(y1 - y0)) + 1
    counts = dots - 1  # the last dot of a segment is the next segment's first
    denominator = np.maximum(counts, 1)
    x_slope, y_slope = (x1 - x0) / denominator, (y1 - y0) / denominator
    segment = np.repeat(np.arange(len(counts)), counts)
    offsets = np.cumsum(counts) - counts
    i = np.arange(int(counts.sum())) - offsets[segment]
    line_x = np.append((x0[segment] + i * x_slope[segment]).astype(np.int64), xs[-1]).tolist()
    line_y = np.append((y0[segment] + i * y_slope[segment]).astype(np.int64), ys[-1]).tolist()
    source = np.append(segment, len(xs) - 1).tolist()
    return [line_x, line_y] + [_take(o, source) for o in other]


def _take(values: list, index: list) -> list:
    first = values[0]
    if values.count(first) == len(values):  # one marker and colour for the whole series: the usual case
        return [first] * len(index)
    return [values[i] for i in index]


@functools.cache
def _code_tuples(size: int) -> list[tuple[int, ...]]:
    """Bit pattern → plotext's marker key: the tuple whose position ``p`` is bit ``p``."""
    return [tuple((code >> p) & 1 for p in range(size)) for code in range(1 << size)]


def hd_group(x: list, y: list, xf: list, yf: list) -> tuple[list, list, list]:
    """Dots → high-definition cells: the cells in first-seen order and each cell's dot pattern.

    Dot ``(x, y)`` lies in cell ``(x // xf, y // yf)``; its bit is ``(yf − 1 − y % yf)·xf + x % xf``
    (plotext's sub-cell matrix, rows reversed, flattened).
    """
    xs, ys = _int_array(x), _int_array(y)
    if xs is None or ys is None or len(xs) != len(ys) or len(set(xf)) != 1 or len(set(yf)) != 1:
        return ORIGINALS["hd_group"](x, y, xf, yf)
    x_factor, y_factor = xf[0], yf[0]
    cell_x, cell_y = xs // x_factor, ys // y_factor
    bit = (y_factor - 1 - ys % y_factor) * x_factor + xs % x_factor
    key = (cell_x - cell_x.min()) * (int(cell_y.max() - cell_y.min()) + 1) + (cell_y - cell_y.min())
    unique, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    codes = np.zeros(len(unique), dtype=np.int64)
    np.bitwise_or.at(codes, inverse.ravel(), np.left_shift(1, bit))
    order = np.argsort(first, kind="stable")  # a dict's insertion order: where each cell was first seen
    table = _code_tuples(x_factor * y_factor)
    return cell_x[first[order]].tolist(), cell_y[first[order]].tolist(), [table[c] for c in codes[order].tolist()]


def set_matrices(self: Any) -> None:
    """Blank marker, colour, background and style matrices (background: canvas colour inside the canvas)."""
    self.marker = [[ut.space] * self.cols for _ in self.Rows]
    self.fullground = [[ut.no_color] * self.cols for _ in self.Rows]
    canvas_row = [self.canvas_color if col in self.Cols_canvas else self.axes_color for col in self.Cols]
    axes_row = [self.axes_color] * len(self.Cols)
    self.background = [list(canvas_row) if row in self.Rows_canvas else list(axes_row) for row in self.Rows]
    self.style = [[ut.no_color] * self.cols for _ in self.Rows]


def install() -> bool:
    """Swap the fast functions into plotext (once). False, and nothing changed, for a plotext other than 5."""
    if ORIGINALS:
        return True
    if not plotext.__version__.startswith("5."):
        return False
    for name, fast in (("get_matrix_data", get_matrix_data), ("get_lines", get_lines), ("hd_group", hd_group)):
        ORIGINALS[name] = getattr(ut, name)
        setattr(ut, name, fast)
    ORIGINALS["set_matrices"] = plotext_matrix.matrix_class.set_matrices
    plotext_matrix.matrix_class.set_matrices = set_matrices
    return True


def uninstall() -> None:
    """plotext's own functions back (for the tests that compare the two)."""
    for name in ("get_matrix_data", "get_lines", "hd_group"):
        if name in ORIGINALS:
            setattr(ut, name, ORIGINALS[name])
    if "set_matrices" in ORIGINALS:
        plotext_matrix.matrix_class.set_matrices = ORIGINALS["set_matrices"]
    ORIGINALS.clear()
