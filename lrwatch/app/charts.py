"""What the two charts show, as :class:`~lrwatch.charts.plot.ChartSpec` values: no Textual here.

Every series is decimated to about two points per column before it is drawn, and the
preview of the run ahead is computed once per timeline (and width), so a frame costs the same
at step 1,000 and at step 1,000,000.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lrwatch.charts.plot import DIM, MARKER_COLOR, NOW_COLOR, PALETTE, ChartSpec, Line
from lrwatch.record.history import Ema, MetricHistory, decimate
from lrwatch.schedule.timeline import Timeline

APPLIED_COLOR = PALETTE[0]
PREVIEW_COLOR = DIM
CANDIDATE_COLORS = {"exp": 208, "cosine": 170, "cosine-restarts": 141, "step": 220, "cooldown": 51}
# A race's candidates on the loss chart: none of the loss chart's own colours (raw, EMA, val).
RACE_COLORS = {"continue": 39, "exp": 203, "cosine": 114, "cosine-restarts": 141, "step": 220}
RAW_LOSS_COLOR = 240
EMA_COLOR = 208
VAL_COLOR = 170
Y_AXIS_WIDTH = 6  # the y tick labels take about this much of the chart's width


SMOOTHING_LEVELS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999)


def next_smoothing(current: float, direction: int) -> float:
    """The EMA smoothing one level up (``direction`` 1) or down (-1) from ``current``."""
    i = min(range(len(SMOOTHING_LEVELS)), key=lambda j: abs(SMOOTHING_LEVELS[j] - current))
    return SMOOTHING_LEVELS[min(max(i + direction, 0), len(SMOOTHING_LEVELS) - 1)]


def plot_columns(width: int) -> int:
    return max(width - Y_AXIS_WIDTH, 8)


DENSE_PREVIEW_STEPS = 20_000
SAMPLES_PER_COLUMN = 8


def preview_points(timeline: Timeline, start: int, end: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
    """LRs of steps ``start..end − 1`` at about two points per column.

    Short ranges are evaluated step by step and min/max-decimated (exact). Long ones are sampled at
    ``SAMPLES_PER_COLUMN`` points per column plus every segment start, so the cost does not grow with
    the run's length; a drop inside a column shows within that column.
    """
    if end - start <= DENSE_PREVIEW_STEPS:
        steps = np.arange(start, end)
    else:
        grid = np.linspace(start, end - 1, SAMPLES_PER_COLUMN * columns).astype(np.int64)
        starts = [s.start_step for s in timeline.segments if start <= s.start_step < end]
        steps = np.unique(np.concatenate([grid, np.array(starts, dtype=np.int64)]))
    return decimate(steps, timeline.lrs(steps), 2 * columns)


@dataclass
class PreviewCache:
    """The planned run's LRs under one timeline, decimated on the chart's column grid."""

    timeline: Timeline | None = None
    columns: int = 0
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray = field(default_factory=lambda: np.empty(0))

    def get(self, timeline: Timeline, columns: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        if timeline is not self.timeline or columns != self.columns:
            self.x, self.y = preview_points(timeline, 0, end, columns)
            self.timeline, self.columns = timeline, columns
        return self.x, self.y


def points_for(columns: int, data_span: float, axis_span: float) -> int:
    """About two points per column the data covers (not per column of the whole axis)."""
    return max(4, int(2 * columns * min(1.0, data_span / max(axis_span, 1e-12))) + 2)


def column_envelope(
    x: np.ndarray, y: np.ndarray, lo: float, hi: float, columns: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per chart column, the min and the max of ``y``: a band's two edges, one point per column each.

    Drawing a noisy series as its envelope costs two thin lines instead of a zigzag through
    every cell of the band, and still shows every extreme.
    """
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        return x, y, y
    col = np.clip(((x - lo) / max(hi - lo, 1e-12) * columns).astype(np.int64), 0, columns - 1)
    order = np.argsort(col, kind="stable")
    col, xs, ys = col[order], x[order], y[order]
    starts = np.flatnonzero(np.r_[True, col[1:] != col[:-1]])
    return xs[starts], np.minimum.reduceat(ys, starts), np.maximum.reduceat(ys, starts)


def planned_end(timeline: Timeline, step: int) -> int:
    """The last step the x axis spans: the planned run, or a little past ``step`` when unknown."""
    if timeline.total_steps:
        return max(timeline.total_steps, step + 1)
    return max(int(step * 1.25), step + 10 * timeline.steps_per_epoch)


def lr_chart(
    history: MetricHistory,
    timeline: Timeline,
    step: int,
    *,
    width: int,
    height: int,
    log_y: bool,
    ascii: bool,
    preview: PreviewCache | None,
    candidates: dict[str, Timeline] | None = None,
) -> ChartSpec:
    """Applied LRs (solid), the preview ahead (dim; none when ``preview`` is None), candidates, switch markers."""
    k = timeline.steps_per_epoch
    end = planned_end(timeline, step)
    columns = plot_columns(width)
    snap = history.snapshot(points_for(columns, step, end))
    lines = [Line(snap.steps_lr / k, snap.lr, APPLIED_COLOR, marker="*" if ascii else None)]
    px, py = preview.get(timeline, columns, end) if preview is not None else (np.empty(0), np.empty(0))
    ahead = px >= step
    if ahead.any():
        x = np.concatenate([[step], px[ahead]]) / k
        y = np.concatenate([[timeline.lr_at(step)], py[ahead]])
        lines.insert(0, Line(x, y, PREVIEW_COLOR, marker="." if ascii else None))
    for kind, candidate in (candidates or {}).items():
        cx, cy = preview_points(candidate, step, end, columns)
        lines.append(Line(cx / k, cy, CANDIDATE_COLORS.get(kind, PALETTE[1]), marker="+" if ascii else None))
    vlines = [(seg.start_step / k, MARKER_COLOR) for seg in timeline.segments[1:]]
    vlines.append((step / k, NOW_COLOR))
    return ChartSpec(lines, width, height, log_y=log_y, xlim=(0.0, end / k), vlines=vlines, ascii=ascii)


@dataclass
class LossView:
    """Keeps the EMA of the training loss up to date, a few new points per frame."""

    ema: Ema
    seen: int = 0

    def update(self, history: MetricHistory) -> None:
        n = len(history)
        if n > self.seen:
            self.ema.extend(history.column("loss", self.seen, n))
            self.seen = n


def recent_start(step: int, steps_per_epoch: int) -> int:
    """The recent window: the last two epochs, or the last 500 steps if that is more."""
    return max(0, step - max(2 * steps_per_epoch, 500))


def loss_chart(
    history: MetricHistory,
    view: LossView,
    timeline: Timeline,
    step: int,
    *,
    width: int,
    height: int,
    log_y: bool,
    recent: bool,
    ascii: bool,
    races: list[RaceCurves] | None = None,
) -> ChartSpec:
    """Raw training loss (faint), its EMA (bright), validation loss per epoch, and races' candidates
    (each from its fork, in its colour: :func:`race_lines`).

    The whole-run window shares the LR chart's x axis (the planned run) and its switch
    markers, so a switch and the loss's answer to it line up.
    """
    k = timeline.steps_per_epoch
    view.update(history)
    columns = plot_columns(width)
    since = recent_start(step, k) if recent else 0
    hi = max(step, since + 1) if recent else planned_end(timeline, step)
    points = points_for(columns, step - since, hi - since)
    snap = history.snapshot(points, since_step=since)
    rows, ey = view.ema.column_means(history.row_of(since), max(points // 2, 2))
    ex = history.steps_at(rows)
    band_x, band_lo, band_hi = column_envelope(snap.steps_loss / k, snap.loss, since / k, hi / k, columns)
    raw_marker = "." if ascii else None
    lines = [
        Line(band_x, band_hi, RAW_LOSS_COLOR, marker=raw_marker),
        Line(band_x, band_lo, RAW_LOSS_COLOR, marker=raw_marker),
        Line(ex / k, ey, EMA_COLOR, marker="*" if ascii else None),
    ]
    val_steps, val_loss = snap.val.get("val_loss", (np.empty(0), np.empty(0)))
    if len(val_steps):
        lines.append(Line(val_steps / k, val_loss, VAL_COLOR, marker="o" if ascii else None))
    lines += race_lines(races or [], k, since, ascii)
    vlines = [(seg.start_step / k, MARKER_COLOR) for seg in timeline.segments[1:] if seg.start_step >= since]
    return ChartSpec(lines, width, height, log_y=log_y, xlim=(since / k, hi / k), vlines=vlines, ascii=ascii)


def race_color(name: str) -> int:
    return RACE_COLORS.get(name, PALETTE[6])


RaceCurves = tuple[int, int, list[tuple[str, list[int], list[float]]]]  # fork, horizon, (name, offsets, losses)


def race_curves(race: dict) -> RaceCurves:
    """A ``race`` event's candidates, or a race under way's so far (``RunStatus.race``: ``names``, ``curves``)."""
    if "curves" in race:
        named = [(name, x, y) for name, (x, y) in zip(race["names"], race["curves"], strict=False)]
    else:
        named = [(c["name"], c["curve_x"], c["curve"]) for c in race["candidates"]]
    return int(race["fork"]), int(race["horizon"]), named


def race_lines(races: list[RaceCurves], k: int, since: int, ascii: bool) -> list[Line]:
    """Each race's candidates' losses from its fork step on (those that end before ``since`` are left out)."""
    lines = []
    for fork, horizon, named in races:
        if fork + horizon < since:
            continue
        for name, x, y in named:
            if len(x):
                steps = fork + np.asarray(x, dtype=np.float64)
                lines.append(Line(steps / k, np.asarray(y, dtype=np.float64), race_color(name), "x" if ascii else None))
    return lines


RATE_WINDOW_SECONDS = 3.0


class StepRate:
    """Steps per second over about the last :data:`RATE_WINDOW_SECONDS`: ``Δstep / Δt`` between the
    oldest and newest sample kept."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, step: int) -> None:
        samples = self._samples
        samples.append((now, step))
        while len(samples) > 2 and now - samples[1][0] >= RATE_WINDOW_SECONDS:
            samples.popleft()

    def per_second(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, s0), (t1, s1) = self._samples[0], self._samples[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0
