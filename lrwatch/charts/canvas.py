"""The monitor's charts as cells: plotext 5's line drawing and left/bottom axes, in numpy.

A :class:`Frame` says everything about one chart in plotext's terms: the size, the axis limits,
the ticks and their labels, the series and the vertical marker lines. :func:`draw` turns it into a
grid of characters and colours, cell for cell what plotext 5's ``build()`` of the same figure gives
(``tests/test_canvas.py`` compares the two on random charts). Why not plotext itself at every frame:
its per-dot loops are pure Python (34 ms a frame at 10⁶ steps), its public functions draw on one
process-wide figure, and plotext 6.1 took 13 ms per chart at 160×48 (README, design notes).

plotext's drawing, as reproduced here (rows count from the bottom, as in plotext):

- canvas: ``W = width − 1 − len(y label)`` columns from ``col0 = len(y label) + 1``,
  ``H = height − 2`` rows from ``row0 = 2`` (one row of x labels, one of x axis);
- a value ``v`` on an axis of ``n`` bins within ``[lo, hi]`` lands in bin
  ``floor(round(0.5 + (n − 1)(v − lo)/(hi − lo), 8))``;
- a line joins consecutive points with ``max(|Δx|, |Δy|) + 1`` dots ``int(x0 + i·Δx/(dots − 1))``;
- braille packs 2×4 dots in a cell: dot ``(x, y)`` is bit ``(3 − y mod 4)·2 + x mod 2`` of cell
  ``(x // 2, y // 4)``; a later series replaces an earlier one's cell, marker and colour.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

BRAILLE = "braille"
NO_COLOR = -1  # the cell keeps the terminal's own colour (axes, labels, blanks)
_SPACE = ord(" ")


@dataclass(frozen=True)
class Series:
    """Points in data units, drawn as a connected line of ``marker`` (``"braille"`` or one character)."""

    x: np.ndarray
    y: np.ndarray
    color: int
    marker: str = BRAILLE


@dataclass(frozen=True)
class Frame:
    """One chart, every number decided: the renderers (this module, plotext) only draw it."""

    width: int
    height: int
    xlim: tuple[float, float]
    ylim: tuple[float, float]
    xticks: Sequence[float]
    xlabels: Sequence[str]
    yticks: Sequence[float]
    ylabels: Sequence[str]
    series: Sequence[Series] = ()
    vlines: Sequence[tuple[float, int]] = ()  # (x, colour)


@dataclass(frozen=True)
class Cells:
    """A drawn chart: ``chars[r, c]`` a code point and ``colors[r, c]`` an xterm-256 index or
    :data:`NO_COLOR`; row 0 is the top row."""

    chars: np.ndarray
    colors: np.ndarray

    def rows(self) -> list[str]:
        """Each row as text."""
        return [row.astype("<u4").tobytes().decode("utf-32-le") for row in self.chars]

    def runs(self) -> list[list[tuple[str, int]]]:
        """Each row as ``(text, colour)`` runs: one per stretch of a colour."""
        out = []
        for text, colors in zip(self.rows(), self.colors, strict=True):
            cuts = np.flatnonzero(colors[1:] != colors[:-1]) + 1
            starts = [0, *cuts.tolist()]
            ends = [*cuts.tolist(), len(text)]
            out.append([(text[a:b], int(colors[a])) for a, b in zip(starts, ends, strict=True)])
        return out


def bins(values: np.ndarray, lim: tuple[float, float], n: int) -> np.ndarray:
    """plotext's data → bin: ``floor(round(0.5 + (n − 1)(v − lo)/(hi − lo), 8))``.

    ``round(·, 8)`` is taken as plotext's Python ``round`` computes it here: scaled by 10⁸, halves
    rounded up, scaled back by the float ``10 ** -8`` (tested equal on random input).
    """
    scaled = (0.5 + (n - 1) * (np.asarray(values, dtype=np.float64) - lim[0]) / (lim[1] - lim[0])) * 10**8
    floor = np.floor(scaled)
    rounded = np.where(scaled - floor < 0.5, floor, np.ceil(scaled)) * 10 ** (-8)
    return np.floor(rounded).astype(np.int64)


def line_dots(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every dot on the straight lines between consecutive points (plotext's ``get_lines``)."""
    if len(xs) < 2:
        return xs, ys
    x0, x1, y0, y1 = xs[:-1], xs[1:], ys[:-1], ys[1:]
    counts = np.maximum(np.abs(x1 - x0), np.abs(y1 - y0))  # dots per segment, less the next one's first
    denominator = np.maximum(counts, 1)
    x_slope, y_slope = (x1 - x0) / denominator, (y1 - y0) / denominator
    segment = np.repeat(np.arange(len(counts)), counts)
    i = np.arange(int(counts.sum())) - (np.cumsum(counts) - counts)[segment]
    line_x = np.append((x0[segment] + i * x_slope[segment]).astype(np.int64), xs[-1])
    line_y = np.append((y0[segment] + i * y_slope[segment]).astype(np.int64), ys[-1])
    return line_x, line_y


@functools.cache
def _braille_table() -> np.ndarray:
    """plotext's dot bit ``p`` (row ``p // 2`` from the top, column ``p % 2``) → Unicode braille code point."""
    unicode_bit = (0x01, 0x08, 0x02, 0x10, 0x04, 0x20, 0x40, 0x80)
    table = np.zeros(256, dtype=np.uint32)
    for code in range(256):
        table[code] = 0x2800 + sum(bit for p, bit in enumerate(unicode_bit) if code >> p & 1)
    return table


def _draw_series(chars: np.ndarray, colors: np.ndarray, series: Series, frame: Frame, origin: tuple[int, int]) -> None:
    """One series onto the canvas part of ``chars``/``colors`` (rows from the bottom here)."""
    row0, col0 = origin
    height, width = chars.shape[0] - row0, chars.shape[1] - col0
    braille = series.marker == BRAILLE
    xf, yf = (2, 4) if braille else (1, 1)
    dx, dy = line_dots(bins(series.x, frame.xlim, width * xf), bins(series.y, frame.ylim, height * yf))
    cx, cy = dx // xf, dy // yf
    inside = (cx >= 0) & (cx < width) & (cy >= 0) & (cy < height)
    cx, cy, dx, dy = cx[inside], cy[inside], dx[inside], dy[inside]
    flat = cy * width + cx
    if braille:
        codes = np.zeros(height * width, dtype=np.int64)
        np.bitwise_or.at(codes, flat, np.left_shift(1, (yf - 1 - dy % yf) * xf + dx % xf))
        cells = np.flatnonzero(codes)
        marks = _braille_table()[codes[cells]]
    else:
        cells = np.unique(flat)
        marks = ord(series.marker[0])
    rows, cols = cells // width + row0, cells % width + col0
    chars[rows, cols] = marks
    colors[rows, cols] = series.color


def _place_label(row: np.ndarray, label: str, at: int) -> int | None:
    """Where plotext puts an x label centred on ``at`` (nudged off the row's ends), or None when it
    would touch a label already there (``correct_coord`` and ``check_space``)."""
    n, cols = len(label), len(row)
    lo, hi = max(at - n + 1, 0), min(at + n, cols - 1)
    free = [i for i in range(lo, hi) if row[i] == _SPACE]
    b, e = min(free, default=at - n + 1), max(free, default=at + n)
    b, e = e - n + 1, b + n
    col = (b + e - n) // 2
    if col < 0 or col + n > cols or (row[max(col - 1, 0) : min(col + n + 1, cols)] != _SPACE).any():
        return None
    return col


def draw(frame: Frame) -> Cells:
    """The chart's cells, as plotext 5 builds this figure with the ``clear`` theme and left/bottom axes."""
    width, height = frame.width, frame.height
    chars = np.full((height, width), _SPACE, dtype=np.uint32)  # row 0 is the bottom until the end
    colors = np.full((height, width), NO_COLOR, dtype=np.int16)
    used = bool(frame.series)
    xside, yside = used or bool(frame.vlines), used  # plotext leaves an unused axis without ticks
    ylabels = list(frame.ylabels) if yside else []
    label_width = max((len(label) for label in ylabels), default=0)
    ylabels = [label.rjust(label_width) for label in ylabels]
    has_xlabels = xside and len(frame.xticks) > 0
    canvas_w, canvas_h = width - 1 - label_width, height - 1 - int(has_xlabels)
    col0, row0 = label_width + 1, int(has_xlabels) + 1

    xticks = []
    if xside and canvas_w > 0:
        for tick, label in zip(bins(frame.xticks, frame.xlim, canvas_w).tolist(), frame.xlabels, strict=True):
            col = _place_label(chars[0], label, col0 + tick)
            if col is not None:
                chars[0, col : col + len(label)] = [ord(c) for c in label]
                xticks.append(tick)
    vticks = bins([x for x, _ in frame.vlines], frame.xlim, canvas_w).tolist() if frame.vlines and canvas_w > 0 else []
    rticks = bins(frame.yticks, frame.ylim, canvas_h).tolist() if yside and canvas_h > 0 else []
    for tick, label in zip(rticks, ylabels, strict=True):
        if 0 <= tick + row0 < height:
            chars[tick + row0, : len(label)] = [ord(c) for c in label[:width]]
    if canvas_h > 0 and width >= label_width + 1:  # the y axis, ┤ at each tick
        axis = np.full(canvas_h, ord("│"), dtype=np.uint32)
        axis[[t for t in rticks if 0 <= t < canvas_h]] = ord("┤")
        chars[row0:, label_width] = axis[: height - row0]
    if canvas_w >= 0 and canvas_h >= 0:
        chars[row0 - 1, col0 - 1] = ord("└")
    if canvas_w > 0:  # the x axis: ┴ where a marker line stands, ┬ at each tick
        axis = np.full(canvas_w, ord("─"), dtype=np.uint32)
        axis[[t for t in xticks if 0 <= t < canvas_w]] = ord("┬")
        axis[[t for t in vticks if 0 <= t < canvas_w]] = ord("┴")
        chars[row0 - 1, col0:] = axis[: width - col0]
    for tick, (_, color) in zip(vticks, frame.vlines, strict=True):
        if canvas_h > 0 and 0 <= col0 + tick < width:
            chars[row0:, col0 + tick] = ord("│")
            colors[row0:, col0 + tick] = color
    if canvas_w > 0 and canvas_h > 0:
        for series in frame.series:
            _draw_series(chars, colors, series, frame, (row0, col0))
    return Cells(chars[::-1], colors[::-1])
