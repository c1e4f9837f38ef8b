"""Text charts as plotext 5 draws them: connected braille lines, left/bottom axes, compact tick labels.

Used by the app's chart widgets and by ``lrwatch schedule --format plot``. Callers pass already
decimated series; this module never sees more points than a chart has columns (×2).
Log-y is drawn as log10 on a linear axis with ``10^k`` ticks, so zeros and negatives (clipped
to the smallest positive value) and NaN/Inf (dropped) never reach plotext.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from rich.color import Color
from rich.segment import Segment
from rich.style import Style

from lrwatch.charts.canvas import BRAILLE, NO_COLOR, Frame, Series, draw

# 256-colour indices: safe in tmux and 256-colour terminals alike.
PALETTE = (39, 208, 170, 141, 220, 203, 75, 114)
DIM = 244
MARKER_COLOR = 179
NOW_COLOR = 250


def color_hex(index: int) -> str:
    """The xterm-256 colour ``index`` as ``#rrggbb`` (for legends drawn by Rich)."""
    if index < 16:
        base = (0x000000, 0x800000, 0x008000, 0x808000, 0x000080, 0x800080, 0x008080, 0xC0C0C0)
        bright = (0x808080, 0xFF0000, 0x00FF00, 0xFFFF00, 0x0000FF, 0xFF00FF, 0x00FFFF, 0xFFFFFF)
        return f"#{(base + bright)[index]:06x}"
    if index >= 232:
        level = 8 + 10 * (index - 232)
        return f"#{level:02x}{level:02x}{level:02x}"
    index -= 16
    steps = (0, 95, 135, 175, 215, 255)
    r, g, b = steps[index // 36], steps[(index // 6) % 6], steps[index % 6]
    return f"#{r:02x}{g:02x}{b:02x}"


@dataclass
class Line:
    """One series: ``x`` in the chart's units, ``y`` values, drawn as a connected line."""

    x: np.ndarray
    y: np.ndarray
    color: int = PALETTE[0]
    marker: str | None = None  # one character; None: braille (or • in ASCII mode)


@dataclass
class ChartSpec:
    lines: list[Line]
    width: int
    height: int
    xlim: tuple[float, float]
    log_y: bool = False
    vlines: list[tuple[float, int]] = field(default_factory=list)
    ascii: bool = False
    x_suffix: str = ""  # after each x tick label: "m" on a wall-time axis in minutes
    log_decades: float | None = None  # log-y: the axis spans at most this many decades below the top
    x_log: bool = False  # x is log10 of the value: ticks at whole decades, labelled with the value (1e-4, 0.01)


def compact(value: float) -> str:
    """Short tick label: ``0``, ``0.05``, ``387.1``, ``1.16k``, ``3k``, ``2.5M``, ``1e-4``."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    if magnitude < 1e-3:
        mantissa, exponent = f"{value:.2e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3g}"


def nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    """Up to ``count`` round values (1, 2, 2.5, 5 × 10^k steps) within ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or count < 1:
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    v = first
    while v <= hi + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _finite_xy(x: np.ndarray, y: np.ndarray, log_y: bool, floor: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if log_y:
        y = np.log10(np.maximum(y, floor))
    return x, y


def render(chart: ChartSpec, *, color: bool = True) -> str:
    """The chart as text for stdout: with ANSI colours (plotext's own build), or plain (``color=False``)."""
    if not color:
        return "\n".join("".join(segment.text for segment in row).rstrip() for row in render_rows(chart))
    return plotext_build(frame_of(chart)).rstrip("\n")


def color_wanted(stream: object) -> bool:
    """Colour on a terminal only, as Rich and most CLIs decide: ``NO_COLOR`` (any value) turns it off,
    else ``FORCE_COLOR`` (any value but ``0``) turns it on, else ``stream.isatty()``."""
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR", "0") not in ("", "0"):
        return True
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render_rows(chart: ChartSpec) -> list[list[Segment]]:
    """The chart's rows as Rich segments (one per run of a colour), drawn by :mod:`lrwatch.charts.canvas`."""
    return [[Segment(text, _style(color)) for text, color in row] for row in draw(frame_of(chart)).runs()]


@functools.lru_cache(maxsize=64)
def _style(color: int) -> Style | None:
    return Style(color=Color.from_ansi(color)) if color != NO_COLOR else None


def plotext_build(frame: Frame) -> str:
    """``frame`` drawn by plotext 5 through its public functions, as ANSI text.

    They draw on plotext's one process-wide figure, so this is for the command line (one thread)
    and for the tests that hold :func:`lrwatch.charts.canvas.draw` to plotext's drawing; the monitor
    draws with :mod:`lrwatch.charts.canvas`.
    """
    import plotext

    plotext.clear_figure()
    plotext.limit_size(False, False)  # plotext clamps to the real terminal; the caller chose the size
    plotext.plotsize(frame.width, frame.height)
    plotext.theme("clear")
    plotext.xaxes(True, False)
    plotext.yaxes(True, False)
    for series in frame.series:
        marker = series.marker if series.marker != BRAILLE else "braille"
        plotext.plot(series.x.tolist(), series.y.tolist(), color=series.color, marker=marker)
    plotext.ylim(*frame.ylim)
    plotext.xlim(*frame.xlim)
    plotext.xticks(list(frame.xticks), list(frame.xlabels))
    for x, color in frame.vlines:
        plotext.vline(x, color)
    plotext.yticks(list(frame.yticks), list(frame.ylabels))
    try:
        return plotext.build()
    finally:
        plotext.clear_figure()


def frame_of(chart: ChartSpec) -> Frame:
    """Every number of the chart decided: limits with a margin, round ticks, compact labels, log-y."""
    width, height = max(chart.width, 12), max(chart.height, 4)
    default_marker = "•" if chart.ascii else BRAILLE
    ys = [np.asarray(line.y, dtype=np.float64) for line in chart.lines]
    positive = np.concatenate([y[np.isfinite(y) & (y > 0)] for y in ys] or [np.empty(0)])
    floor = float(positive.min()) if positive.size else 1e-12
    if chart.log_decades is not None and positive.size:  # a decay to 0 would spend the height on its last steps
        floor = max(floor, float(positive.max()) * 10.0**-chart.log_decades)
    lo_y, hi_y = math.inf, -math.inf
    series = []
    for line in chart.lines:
        x, y = _finite_xy(line.x, line.y, chart.log_y, floor)
        if len(x) == 0:
            continue
        if len(x) == 1:  # plotext draws nothing for a one-point line
            x, y = np.repeat(x, 2), np.repeat(y, 2)
        lo_y, hi_y = min(lo_y, float(y.min())), max(hi_y, float(y.max()))
        series.append(Series(x, y, line.color, line.marker or default_marker))
    if not series:
        lo_y, hi_y = 0.0, 1.0
    if hi_y - lo_y < 1e-12 * max(1.0, abs(hi_y)):  # a constant series still gets an axis
        pad = abs(hi_y) * 0.1 or 1.0
        lo_y, hi_y = lo_y - pad, hi_y + pad
    margin = (hi_y - lo_y) * 0.04  # keeps the extreme ticks (often 0) off the axis lines
    lo_y, hi_y = lo_y - margin, hi_y + margin
    lo_x, hi_x = chart.xlim
    if hi_x <= lo_x:
        hi_x = lo_x + 1
    if chart.x_log:
        first_x, last_x = math.ceil(lo_x), math.floor(hi_x)
        every_x = max(1, math.ceil((last_x - first_x + 1) / max(2, width // 12)))
        xt = [float(k) for k in range(first_x, last_x + 1, every_x)] or [lo_x, hi_x]
    else:
        xt = nice_ticks(lo_x, hi_x, max(2, width // 12))
    y_count = max(2, min(6, height // 3))
    if chart.log_y:
        first, last = max(math.ceil(lo_y), -307), min(math.floor(hi_y), 307)
        every = max(1, math.ceil((last - first + 1) / y_count))  # a tick every few decades when there are many
        yt = [float(k) for k in range(first, last + 1, every)]
        if len(yt) < 2:
            yt = [lo_y, hi_y]
        ylabels = [compact(10 ** min(max(v, -307.0), 307.0)) for v in yt]
    else:
        yt = nice_ticks(lo_y, hi_y, y_count)
        ylabels = [compact(v) for v in yt]
    xlabels = [compact(10**v if chart.x_log else v) + chart.x_suffix for v in xt]
    return Frame(width, height, (lo_x, hi_x), (lo_y, hi_y), xt, xlabels, yt, ylabels, series, chart.vlines)


def text_chart(
    series: Sequence[tuple[str, np.ndarray, np.ndarray]],
    *,
    width: int,
    height: int,
    title: str | None = None,
    log_y: bool = False,
    markers: Sequence[int] = (),
    steps_per_epoch: int = 1,
    color: bool = True,
) -> str:
    """A standalone chart of ``(label, steps, values)`` series with x in epochs (for the CLI)."""
    from lrwatch.record.decimate import decimate

    lines = []
    hi = 0.0
    for i, (_label, steps, values) in enumerate(series):
        xs, ys = decimate(np.asarray(steps), np.asarray(values), 2 * width)
        # No plotext legend: it covers the curves' start; callers print theirs below (legend_line).
        lines.append(Line(xs / steps_per_epoch, ys, PALETTE[i % len(PALETTE)]))
        if len(steps):
            hi = max(hi, (float(steps[-1]) + 1) / steps_per_epoch)
    vlines = [(m / steps_per_epoch, MARKER_COLOR) for m in markers]
    # plotext's own title row draws over the chart's top line, so the title is a line of its own.
    spec = ChartSpec(lines, width, height - (1 if title else 0), log_y=log_y, xlim=(0.0, hi), vlines=vlines)
    chart = render(spec, color=color)
    return f"{title}\n{chart}" if title else chart


def legend_line(index: int, text: str, *, color: bool = True) -> str:
    """``━━ text`` with the swatch in the colour :func:`text_chart` gives series ``index``."""
    if not color:
        return f"━━ {text}"
    return f"\x1b[38;5;{PALETTE[index % len(PALETTE)]}m━━\x1b[0m {text}"


def terminal_size() -> tuple[int, int]:
    """Chart size for stdout: the terminal's, or 100×25 when not a terminal (``COLUMNS``/``LINES`` win)."""
    size = shutil.get_terminal_size((100, 25))
    cols = int(os.environ.get("COLUMNS", size.columns))
    lines = int(os.environ.get("LINES", size.lines))
    return max(cols, 20), max(min(lines - 1, 40), 8)
