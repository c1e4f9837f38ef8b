"""lrwatch's numpy versions of plotext's per-dot loops give plotext's own lists, element for element."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrwatch import plotext_fast
from lrwatch.plot import ChartSpec, Line, render, render_rows

ORIGINAL = plotext_fast.ORIGINALS  # filled by lrwatch.plot's import-time install()

coordinates = st.lists(st.integers(-60, 400), min_size=1, max_size=80)


def test_installed() -> None:
    import plotext._utility as ut

    assert ut.hd_group is plotext_fast.hd_group
    assert set(ORIGINAL) == {"get_matrix_data", "get_lines", "hd_group", "set_matrices"}


@settings(max_examples=300, deadline=None)
@given(
    data=st.lists(st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-1000, 1000), min_size=1, max_size=60),
    pad=st.floats(0.001, 10),
    bins=st.integers(2, 600),
)
def test_get_matrix_data(data: list[float], pad: float, bins: int) -> None:
    lim = [min(data) - pad, max(data) + pad]
    assert plotext_fast.get_matrix_data(data, lim, bins) == ORIGINAL["get_matrix_data"](data, lim, bins)


@settings(max_examples=300, deadline=None)
@given(xy=st.data(), mixed_colors=st.booleans())
def test_get_lines(xy: st.DataObject, mixed_colors: bool) -> None:
    x = xy.draw(coordinates)
    y = xy.draw(st.lists(st.integers(-60, 400), min_size=len(x), max_size=len(x)))
    colors = xy.draw(st.lists(st.integers(0, 3), min_size=len(x), max_size=len(x))) if mixed_colors else [39] * len(x)
    other = (["braille"] * len(x), colors, ["default"] * len(x))
    assert plotext_fast.get_lines(x, y, *other) == ORIGINAL["get_lines"](x, y, *other)


@settings(max_examples=300, deadline=None)
@given(xy=st.data(), factors=st.sampled_from([(2, 4), (2, 3), (2, 2)]))
def test_hd_group(xy: st.DataObject, factors: tuple[int, int]) -> None:
    x = xy.draw(coordinates)
    y = xy.draw(st.lists(st.integers(-60, 400), min_size=len(x), max_size=len(x)))
    xf, yf = [factors[0]] * len(x), [factors[1]] * len(x)
    fast = plotext_fast.hd_group(x, y, xf, yf)
    slow = ORIGINAL["hd_group"](x, y, xf, yf)
    assert [list(part) for part in fast] == [list(part) for part in slow]


@pytest.mark.parametrize(
    "data", [[1.0, None, 2.0], [1.0, float("nan"), 3.0], ["2024-01-01", "2024-01-02"], []], ids=str
)
def test_what_the_fast_path_does_not_cover_goes_to_plotext(data: list) -> None:
    lim, bins = [0.0, 4.0], 40
    try:
        expected = ORIGINAL["get_matrix_data"](data, lim, bins)
    except Exception as error:  # plotext's own failure is passed on unchanged
        with pytest.raises(type(error)):
            plotext_fast.get_matrix_data(data, lim, bins)
        return
    assert plotext_fast.get_matrix_data(data, lim, bins) == expected


def random_chart(seed: int) -> ChartSpec:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(int(rng.integers(1, 4))):
        n = int(rng.integers(1, 300))
        x = np.sort(rng.random(n) * 100)
        y = np.cumsum(rng.standard_normal(n)) * 10.0 ** int(rng.integers(-4, 3))
        lines.append(Line(x, y, int(rng.integers(16, 250)), label=f"s{i}" if seed % 5 == 0 else None))
    return ChartSpec(
        lines,
        width=int(rng.integers(12, 160)),
        height=int(rng.integers(4, 50)),
        log_y=bool(rng.integers(0, 2)),
        xlim=(0.0, 100.0),
        vlines=[(50.0, 179)],
        ascii=seed % 4 == 0,
    )


def test_whole_charts_are_identical_with_and_without() -> None:
    charts = [random_chart(seed) for seed in range(120)]
    fast = [(render(c), render_rows(c)) for c in charts]
    plotext_fast.uninstall()
    try:
        slow = [(render(c), render_rows(c)) for c in charts]
    finally:
        assert plotext_fast.install()
    for seed, (f, s) in enumerate(zip(fast, slow, strict=True)):
        assert f[0] == s[0], f"chart {seed}: ANSI differs"
        assert f[1] == s[1], f"chart {seed}: rows differ"
