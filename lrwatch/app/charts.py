"""What the charts show, as :class:`~lrwatch.charts.plot.ChartSpec` values: no Textual here.

Every series is decimated to about two points per column before it is drawn, and the
preview of the run ahead is computed once per timeline (and width), so a frame costs the same
at step 1,000 and at step 1,000,000.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from lrwatch.app.axis import XAxis, planned_end, zoomed_end
from lrwatch.charts.plot import DIM, MARKER_COLOR, NOW_COLOR, PALETTE, ChartSpec, Line
from lrwatch.record.decimate import decimate
from lrwatch.record.history import Ema, MetricHistory
from lrwatch.schedule.timeline import Timeline

APPLIED_COLOR = PALETTE[0]
PREVIEW_COLOR = DIM
CANDIDATE_COLORS = (208, 170, 141, 220)  # by slot: up to four candidates at once, each its own colour
# A race's candidates on the loss chart: none of the loss chart's own colours (raw, EMA, val).
RACE_COLORS = {"continue": 39, "exp": 203, "cosine": 114, "cosine-restarts": 141, "step": 220}
RAW_LOSS_COLOR = 240
EMA_COLOR = 208
VAL_COLOR = 170
Y_AXIS_WIDTH = 6  # the y tick labels take about this much of the chart's width
LOG_DECADES = 4.0  # log-y spans at most this many decades: a cosine to 0 would give most of the height to 1e-9


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
    end: int = 0
    x: np.ndarray = field(default_factory=lambda: np.empty(0))
    y: np.ndarray = field(default_factory=lambda: np.empty(0))

    def get(self, timeline: Timeline, columns: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """``end``: the axis's (a run of unknown length: it grows with the run, and the preview with it)."""
        if timeline is not self.timeline or columns != self.columns or end != self.end:
            self.x, self.y = preview_points(timeline, 0, end, columns)
            self.timeline, self.columns, self.end = timeline, columns, end
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


def candidate_color(slot: int) -> int:
    """The colour of the candidate in ``slot`` (0–3): the order they were shown in, whatever their kind."""
    return CANDIDATE_COLORS[slot % len(CANDIDATE_COLORS)]


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
    axis: XAxis | None = None,
) -> ChartSpec:
    """Applied LRs (solid), the preview ahead (dim; none when ``preview`` is None), candidates (each in
    its slot's colour), switch markers. ``axis``: the x unit (default: epochs)."""
    axis = axis or XAxis("epochs", timeline.steps_per_epoch)
    end = planned_end(timeline, step)
    columns = plot_columns(width)
    snap = history.snapshot(points_for(columns, step, end))
    lines = [Line(axis.x(snap.steps_lr), snap.lr, APPLIED_COLOR, marker="*" if ascii else None)]
    px, py = preview.get(timeline, columns, end) if preview is not None else (np.empty(0), np.empty(0))
    ahead = (px >= step) & (px < (timeline.preview_end if timeline.preview_end is not None else np.inf))
    if ahead.any():
        x = axis.x(np.concatenate([[step], px[ahead]]))
        y = np.concatenate([[timeline.lr_at(step)], py[ahead]])
        lines.insert(0, Line(x, y, PREVIEW_COLOR, marker="." if ascii else None))
    for slot, candidate in enumerate((candidates or {}).values()):
        cx, cy = preview_points(candidate, step, end, columns)
        lines.append(Line(axis.x(cx), cy, candidate_color(slot), marker="+" if ascii else None))
    vlines = [(axis.at(seg.start_step), MARKER_COLOR) for seg in timeline.segments[1:]]
    vlines.append((axis.at(step), NOW_COLOR))
    return ChartSpec(lines, width, height, log_y=log_y, xlim=(axis.at(0), axis.at(end)), vlines=vlines, ascii=ascii,
                     x_suffix=axis.suffix, log_decades=LOG_DECADES)  # fmt: skip


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


def loss_window(timeline: Timeline, step: int, recent: bool) -> tuple[int, int]:
    """The loss chart's steps ``(since, until)``: the recent window, or the whole run zoomed to the data
    while it fills less than half of it (:func:`~lrwatch.app.axis.zoomed_end`)."""
    if recent:
        since = recent_start(step, timeline.steps_per_epoch)
        return since, max(step, since + 1)
    return 0, zoomed_end(planned_end(timeline, step), step)


def smoothed_lines(
    steps: np.ndarray,
    values: np.ndarray,
    ema: tuple[np.ndarray, np.ndarray],
    *,
    axis: XAxis,
    lo: float,
    hi: float,
    columns: int,
    color: int,
    ascii: bool,
) -> list[Line]:
    """A noisy series as the monitor draws it: its per-column band (min and max, faint) and its smoothed
    line (``ema``: steps and values, one point per column or so) in ``color``. Any metric's chart can use it;
    ``lo``/``hi`` are the axis's limits in its unit."""
    band_x, band_lo, band_hi = column_envelope(axis.x(steps), values, lo, hi, columns)
    raw_marker = "." if ascii else None
    return [
        Line(band_x, band_hi, RAW_LOSS_COLOR, marker=raw_marker),
        Line(band_x, band_lo, RAW_LOSS_COLOR, marker=raw_marker),
        Line(axis.x(ema[0]), ema[1], color, marker="*" if ascii else None),
    ]


def ema_points(values: np.ndarray, smoothing: float, columns: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, values)``: the EMA (``smoothing`` as ``[`` ``]`` set it) of ``values[start:]``, one mean per
    column; for a metric without a kept :class:`LossView` (its cost is one pass over ``values``)."""
    ema = Ema(smoothing)
    ema.extend(np.asarray(values, dtype=np.float64))
    return ema.column_means(start, columns)


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
    axis: XAxis | None = None,
) -> ChartSpec:
    """Raw training loss (faint), its EMA (bright), validation loss per epoch, and races' candidates
    (each from its fork, in its colour: :func:`race_lines`).

    The whole-run window is the LR chart's x axis (the planned run), zoomed in by halves while the run has
    filled less than half of it (:func:`loss_window`); it has the LR chart's switch markers, so a switch and
    the loss's answer to it line up.
    """
    axis = axis or XAxis("epochs", timeline.steps_per_epoch)
    view.update(history)
    columns = plot_columns(width)
    since, hi = loss_window(timeline, step, recent)
    points = points_for(columns, step - since, hi - since)
    snap = history.snapshot(points, since_step=since)
    rows, ey = view.ema.column_means(history.row_of(since), max(points // 2, 2))
    lo_x, hi_x = axis.at(since), axis.at(hi)
    lines = smoothed_lines(snap.steps_loss, snap.loss, (history.steps_at(rows), ey), axis=axis, lo=lo_x, hi=hi_x,
                           columns=columns, color=EMA_COLOR, ascii=ascii)  # fmt: skip
    val_steps, val_loss = snap.val.get("val_loss", (np.empty(0), np.empty(0)))
    if len(val_steps):
        lines.append(Line(axis.x(val_steps), val_loss, VAL_COLOR, marker="o" if ascii else None))
    lines += race_lines(races or [], axis, since, ascii)
    vlines = [(axis.at(seg.start_step), MARKER_COLOR) for seg in timeline.segments[1:] if since <= seg.start_step <= hi]
    return ChartSpec(lines, width, height, log_y=log_y, xlim=(lo_x, hi_x), vlines=vlines, ascii=ascii,
                     x_suffix=axis.suffix, log_decades=LOG_DECADES)  # fmt: skip


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


def race_lines(races: list[RaceCurves], axis: XAxis, since: int, ascii: bool) -> list[Line]:
    """Each race's candidates' losses from its fork step on (those that end before ``since`` are left out)."""
    lines = []
    for fork, horizon, named in races:
        if fork + horizon < since:
            continue
        for name, x, y in named:
            if len(x):
                steps = fork + np.asarray(x, dtype=np.float64)
                color = race_color(name)
                lines.append(Line(axis.x(steps), np.asarray(y, dtype=np.float64), color, "x" if ascii else None))
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
