"""lrwatch's canvas draws what plotext 5's own build draws, cell for cell and colour for colour."""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import plotext
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrwatch.charts.canvas import NO_COLOR, Frame, Series, bins, draw, line_dots
from lrwatch.charts.plot import ChartSpec, Line, frame_of, plotext_build, render, render_rows

SGR = re.compile(r"\x1b\[([0-9;]*)m")


def plotext_cells(frame: Frame) -> tuple[list[str], list[list[int]]]:
    """plotext's public build of ``frame``, its ANSI read back into rows of text and per-cell colours."""
    rows, colors = [], []
    for line in plotext_build(frame).rstrip("\n").split("\n"):
        text, cell_colors, color = [], [], NO_COLOR
        for i, part in enumerate(SGR.split(line)):
            if i % 2:  # an SGR's parameters
                codes = part.split(";")
                if codes[:2] == ["38", "5"]:
                    color = int(codes[2])
                elif codes == ["0"] or codes == [""]:
                    color = NO_COLOR
                continue
            text.append(part)
            cell_colors.extend([color] * len(part))
        rows.append("".join(text))
        colors.append(cell_colors)
    return rows, colors


def ours(frame: Frame) -> tuple[list[str], list[list[int]]]:
    cells = draw(frame)
    blank = cells.chars == ord(" ")
    colors = np.where(blank, NO_COLOR, cells.colors)  # a blank's colour is invisible; plotext may still set it
    return cells.rows(), colors.tolist()


def random_chart(seed: int) -> ChartSpec:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(int(rng.integers(0 if seed % 17 == 0 else 1, 4))):
        n = int(rng.integers(1, 300))
        x = np.sort(rng.random(n) * 120 - 10)  # some points left and right of the x range
        y = np.cumsum(rng.standard_normal(n)) * 10.0 ** int(rng.integers(-4, 3))
        marker = None if seed % 3 else str(rng.choice(["*", ".", "+", "o"]))
        lines.append(Line(x, y, int(rng.integers(16, 250)), marker=marker))
    vlines = [(float(v), int(rng.integers(16, 250))) for v in rng.random(int(rng.integers(0, 3))) * 100]
    return ChartSpec(
        lines,
        width=int(rng.integers(12, 160)),
        height=int(rng.integers(4, 50)),
        xlim=(0.0, float(rng.choice([1.0, 7.5, 100.0, 2e6]))),
        log_y=bool(rng.integers(0, 2)),
        vlines=vlines,
        ascii=seed % 4 == 0,
    )


@pytest.mark.parametrize("block", range(4))
def test_whole_charts_are_plotexts(block: int) -> None:
    for seed in range(50 * block, 50 * block + 50):
        frame = frame_of(random_chart(seed))
        text, colors = ours(frame)
        expected_text, expected_colors = plotext_cells(frame)
        assert text == expected_text, f"chart {seed}: characters differ"
        blank = [[c == " " for c in row] for row in expected_text]
        expected_colors = [
            [NO_COLOR if b else c for b, c in zip(bl, row, strict=True)]
            for bl, row in zip(blank, expected_colors, strict=True)
        ]
        assert colors == expected_colors, f"chart {seed}: colours differ"


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-1000, 1000), min_size=1, max_size=60),
    pad=st.floats(0.001, 10),
    n=st.integers(2, 600),
)
def test_bins_are_plotexts_formula(data: list[float], pad: float, n: int) -> None:
    lo, hi = min(data) - pad, max(data) + pad
    expected = [math.floor(round(0.5 + (n - 1) * (v - lo) / (hi - lo), 8)) for v in data]  # plotext 5's, verbatim
    assert bins(np.array(data, dtype=np.float64), (lo, hi), n).tolist() == expected


@settings(max_examples=300, deadline=None)
@given(points=st.lists(st.tuples(st.integers(-60, 400), st.integers(-60, 400)), min_size=1, max_size=80))
def test_line_dots_are_plotexts_lines(points: list[tuple[int, int]]) -> None:
    expected_x, expected_y = [], []
    for (x0, y0), (x1, y1) in itertools.pairwise(points):  # plotext 5's get_line (linspace), last dot dropped
        dots = max(abs(x1 - x0), abs(y1 - y0)) + 1
        x_slope, y_slope = ((x1 - x0) / (dots - 1), (y1 - y0) / (dots - 1)) if dots > 1 else (0, 0)
        for i in range(dots - 1):
            expected_x.append(int(x0 + i * x_slope))
            expected_y.append(int(y0 + i * y_slope))
    expected_x.append(points[-1][0])
    expected_y.append(points[-1][1])
    xs, ys = line_dots(np.array([p[0] for p in points]), np.array([p[1] for p in points]))
    assert (xs.tolist(), ys.tolist()) == (expected_x, expected_y)


def test_later_series_own_a_shared_cell() -> None:
    x = np.array([0.0, 10.0])
    frame = Frame(20, 6, (0.0, 10.0), (0.0, 1.0), [0.0], ["0"], [0.0], ["0"],
                  [Series(x, np.array([0.5, 0.5]), 39), Series(x, np.array([0.5, 0.5]), 208)])  # fmt: skip
    cells = draw(frame)
    drawn = cells.chars != ord(" ")
    assert set(cells.colors[drawn & (cells.colors != NO_COLOR)].tolist()) == {208}


def test_the_cli_and_the_monitor_draw_the_same_chart() -> None:
    spec = random_chart(7)
    assert render(spec, color=False) == "\n".join(
        "".join(segment.text for segment in row).rstrip() for row in render_rows(spec)
    )
    assert plotext.uncolorize(render(spec)).split("\n")[0].rstrip() == render(spec, color=False).split("\n")[0]


def test_plotext_is_left_as_it_was() -> None:
    """No attribute of plotext is replaced, and the CLI's build leaves its global figure empty."""
    import plotext._utility as ut

    before = {name: getattr(ut, name) for name in ("get_matrix_data", "get_lines", "hd_group")}
    render(random_chart(3))
    render_rows(random_chart(3))
    assert {name: getattr(ut, name) for name in before} == before
    assert all(getattr(ut, name).__module__ == "plotext._utility" for name in before)
