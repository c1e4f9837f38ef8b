"""What a frame of the monitor draws: the two charts (their x axis, the columns that decide when they are
redrawn, their titles) and the run and schedule panels, from the run source the app holds.

A mixin of :class:`~lrwatch.app.monitor.LRWatchApp`: the app's frame timer (``tick``) decides *when*;
this says *what*, from the history, the timeline and the view options.
"""

from __future__ import annotations

from typing import Any

from lrwatch.app.axis import StepClock, XAxis, planned_end
from lrwatch.app.candidates import Candidates
from lrwatch.app.charts import (
    LossView,
    PreviewCache,
    RaceCurves,
    StepRate,
    loss_chart,
    loss_window,
    lr_chart,
    race_curves,
)
from lrwatch.app.metrics import MetricView, metric_chart
from lrwatch.charts.plot import ChartSpec
from lrwatch.protocol.events import RunStatus
from lrwatch.schedule.timeline import Timeline

# New data redraws the charts at most this often (a key press, a switch or a resize at once): a full
# redraw is ~15 KB of terminal output and, at 120×40, ~8 ms of CPU taken from training. On a larger
# terminal a redraw costs more, so the interval stretches to keep the builds within CHART_CPU_BUDGET
# of a core (up to CHART_MAX_INTERVAL).
CHART_MIN_INTERVAL = 1.0
CHART_MAX_INTERVAL = 4.0
CHART_CPU_BUDGET = 0.01


class Drawing:
    """The charts and panels of a frame."""

    # provided by the app
    source: Any
    monitor_screen: Any
    candidates: Candidates
    races: list[RaceCurves]
    _racing: list[str]
    _preview: PreviewCache
    _loss_view: LossView
    ascii_markers: bool
    step_clock: StepClock
    cpu_clock: Any
    chart_interval: float
    device: str
    rate: StepRate
    anchor: str
    connected: bool
    epochs_known: bool
    refresh_candidates: Any
    _step: Any

    def _chart_columns(self, step: int) -> tuple[int, int]:
        """Which column of each chart the run is in: the charts are redrawn when one moves, not on every
        frame.

        The x axis spans the planned run (the loss chart: the part of it :func:`loss_window` shows), so new
        steps inside one column change nothing a redraw would show but the current column; waiting for the
        next one costs neither the UI's CPU (stolen from training) nor SSH bandwidth. The recent window
        scrolls, so it redraws each frame.
        """
        columns = self.monitor_screen.chart_columns
        end = planned_end(self.source.timeline, step)
        since, hi = loss_window(self.source.timeline, step, self.monitor_screen.recent)
        loss = step if self.monitor_screen.recent else (step - since) * columns // max(hi - since, 1)
        return step * columns // max(end, 1), loss

    def _draw_charts(self, status: RunStatus) -> None:
        started = self.cpu_clock()
        self._build_charts(status.step, drives_lr=status.drives_lr, race=status.race)
        cost = self.cpu_clock() - started
        self.chart_interval = min(max(cost / CHART_CPU_BUDGET, CHART_MIN_INTERVAL), CHART_MAX_INTERVAL)

    def axis(self, step: int) -> XAxis:
        """The x axis the charts use now (``x`` picks it)."""
        timeline = self.source.timeline
        return XAxis.make(self.monitor_screen.axis_mode, timeline, epochs_known=self.epochs_known,
                          clock=self.step_clock, end=planned_end(timeline, step))  # fmt: skip

    def picker_chart(self, candidates: dict[str, Timeline], width: int, height: int) -> ChartSpec:
        """The LR chart with ``candidates`` drawn (the picker's preview of a kind)."""
        step = int(self.source.status().step)
        return lr_chart(self.source.history, self.source.timeline, step, width=width, height=height,
                        log_y=self.monitor_screen.log_lr, ascii=self.ascii_markers, preview=self._preview,
                        candidates=candidates, axis=self.axis(step))  # fmt: skip

    def _build_charts(self, step: int, *, drives_lr: bool, race: dict | None = None) -> None:
        view = self.monitor_screen
        training = race is not None and race.get("phase") == "training"  # then the race event draws it
        races = [*self.races, race_curves(race)] if training else self.races
        timeline = self.source.timeline
        history = self.source.history
        if self.candidates and abs(step - self.candidates.step) * 200 > max(timeline.total_steps or 0, 1):
            self.refresh_candidates(step)
        axis = self.axis(step)
        self._titles(step)
        view.draw_charts(
            lambda w, h: lr_chart(
                history,
                timeline,
                step,
                width=w,
                height=h,
                log_y=view.log_lr,
                ascii=self.ascii_markers,
                preview=self._preview if drives_lr or timeline.script is not None else None,  # a script's own too
                candidates=self.candidates.timelines,
                axis=axis,
            ),
            (lambda w, h: self._second_chart(history, axis, w, h))
            if self.second_metric
            else lambda w, h: loss_chart(
                history,
                self._loss_view,
                timeline,
                step,
                width=w,
                height=h,
                log_y=view.log_loss,
                recent=view.recent,
                ascii=self.ascii_markers,
                races=races,
                axis=axis,
            ),
        )

    def _second_chart(self, history: Any, axis: XAxis, width: int, height: int) -> ChartSpec:
        """The main view's second chart with a metric instead of the loss (``enter`` in the metrics view)."""
        name = self.second_metric
        view = None
        if name in history.metric_names():
            views = self.__dict__.setdefault("_second_views", {})
            key = (name, self.monitor_screen.smoothing, self.monitor_screen.axis_mode)
            view = views.setdefault(key, MetricView(self.monitor_screen.smoothing))
        return metric_chart(history, name, view, axis, width=width, height=height,
                            log_y=self.monitor_screen.log_loss, ascii=self.ascii_markers)  # fmt: skip

    def _titles(self, step: int | None = None) -> None:
        names = dict.fromkeys([*(name for _, _, named in self.races for name, _, _ in named), *self._racing])
        zoomed = False
        if self.connected:
            step = self._step() if step is None else step
            zoomed = loss_window(self.source.timeline, step, False)[1] < planned_end(self.source.timeline, step)
        self.monitor_screen.titles(self.candidates, list(names), zoomed=zoomed)
        if getattr(self, "second_metric", None):
            chart = self.monitor_screen.query_one("#loss-chart")
            chart.border_title = f"{self.second_metric} · ema {self.monitor_screen.smoothing:g} (m: metrics)"
            chart.border_subtitle = ""

    def _update_status(self, status: RunStatus) -> None:
        history = self.source.history
        self.monitor_screen.show_status(
            status,
            rate=self.rate.per_second() if status.state == "running" else 0.0,
            device=self.device,
            last=history.last() or {},
            val=history.validation()[2],
            spec=str(self.source.timeline.segment_at(status.step).spec),
        )

    def _update_schedule(self, status: RunStatus) -> None:
        self.monitor_screen.show_schedule(status, self.source.timeline, anchor=self.anchor, candidates=self.candidates)
