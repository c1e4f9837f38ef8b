"""What a subscriber is sent of a run: one snapshot, then only what is new.

A :class:`Feed` remembers, for one subscriber, how far it has been sent: rows of the history, epoch-end
metrics, events, and the timeline object. :meth:`Feed.snapshot` is everything so far; :meth:`Feed.news`
is everything since, as wire messages. Starting each from the index the last one reached is what makes
a snapshot and the live stream join with no gap and no duplicate. The server decides when and to whom.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from lrwatch.protocol.events import RunStatus
from lrwatch.protocol.wire import metrics_message, rows_message

SNAPSHOT_ROWS = 50_000  # step rows a snapshot sends at most (the last half exact); the rest decimated
SNAPSHOT_POINTS = 10_000  # points of each metric likewise: a chart of the metrics view is ~40 columns wide


class Feed:
    """One subscriber's position in ``engine``'s run (history rows, epochs, events, timeline)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.rows_sent = 0
        self.epochs_sent = 0
        self.events_sent = 0
        self.timeline_sent: Any = None
        self.metrics_sent: dict[str, int] = {}  # points of each step-level metric sent

    def snapshot(self, status: RunStatus, max_rows: int | None = None) -> dict[str, Any]:
        """Everything so far, as one ``snapshot`` message; the feed continues from there.

        A long run is decimated here (``max_rows``): its last ``max_rows // 2`` rows exact (the recent
        window, the EMA's end), the rows before as the loss's min and max per bucket (block extrema, cost
        O(rows ÷ 256)); each metric alike. ``rows_through`` (and each metric's ``through``) says how many
        rows the message stands for, so the live stream goes on from there.
        """
        max_rows = SNAPSHOT_ROWS if max_rows is None else max_rows  # 0: everything, exact
        history = self.engine.history
        n = len(history)
        steps, epochs, values = history.validation()
        events = self.engine.events_since(0)
        self.rows_sent, self.epochs_sent, self.events_sent = n, len(steps), len(events)
        self.timeline_sent = self.engine.timeline
        return {
            "type": "snapshot",
            "status": status.to_dict(),
            "timeline": self.timeline_sent.to_dict(),
            "val_names": list(history.val_names),
            "rows": self._snapshot_rows(n, max_rows),
            "rows_through": n,
            "metrics": self._snapshot_metrics(min(max_rows, SNAPSHOT_POINTS) if max_rows else 0),
            "epochs": epoch_lists(steps, epochs, values, 0),
            "events": [e.to_dict() for e in events],
        }

    def _snapshot_rows(self, n: int, max_rows: int) -> dict[str, Any]:
        if not max_rows or n <= max_rows:
            return self._rows(0, n)
        history, tail = self.engine.history, max_rows // 2
        rows = np.concatenate([history.decimated_rows(n - tail, max_rows - tail), np.arange(n - tail, n)])
        return rows_message(0, *history.rows(rows), self.engine.timeline.steps_per_epoch)

    def _snapshot_metrics(self, max_rows: int) -> dict[str, Any]:
        history = self.engine.history
        self.metrics_sent = {}
        series = {}
        for name in history.metric_names():
            count = history.metric_length(name)
            if not max_rows or count <= max_rows:
                steps, values = history.metric(name)
            else:
                tail = max_rows // 2
                head_steps, head_values = history.metric_points(name, count - tail, max_rows - tail)
                tail_steps, tail_values = history.metric(name, count - tail)
                steps, values = np.concatenate([head_steps, tail_steps]), np.concatenate([head_values, tail_values])
            series[name] = (0, steps[: len(values)], values)
            self.metrics_sent[name] = count
        message = metrics_message(series)["series"]
        for name, entry in message.items():
            entry["through"] = self.metrics_sent[name]
        return message

    def news(self) -> Iterator[dict[str, Any]]:
        """What is new since the last snapshot or news: rows, epoch metrics, the timeline, events."""
        engine = self.engine
        n = len(engine.history)
        if n > self.rows_sent:
            yield self._rows(self.rows_sent, n)
            self.rows_sent = n
        metrics = self._metrics()
        if metrics["series"]:
            yield metrics
        steps, epochs, values = engine.history.validation()
        if len(steps) > self.epochs_sent:
            yield {"type": "epochs", **epoch_lists(steps, epochs, values, self.epochs_sent)}
            self.epochs_sent = len(steps)
        timeline = engine.timeline
        if timeline is not self.timeline_sent:
            yield {"type": "timeline", "timeline": timeline.to_dict()}
            self.timeline_sent = timeline
        for event in engine.events_since(self.events_sent):
            yield {"type": "event", "index": self.events_sent, "event": event.to_dict()}
            self.events_sent += 1

    def _metrics(self, *, restart: bool = False) -> dict[str, Any]:
        """Each step-level metric's points not sent yet (``restart``: all of them)."""
        if restart:
            self.metrics_sent = {}
        history = self.engine.history
        series = {}
        for name in history.metric_names():
            start = self.metrics_sent.get(name, 0)
            steps, values = history.metric(name, start)
            if len(steps):
                series[name] = (start, steps, values)
                self.metrics_sent[name] = start + len(steps)
        return metrics_message(series)

    def _rows(self, start: int, stop: int) -> dict[str, Any]:
        h = self.engine.history
        return rows_message(
            start, h.column("step", start, stop), h.column("epoch", start, stop),
            h.column("lr", start, stop), h.column("loss", start, stop), self.engine.timeline.steps_per_epoch,
        )  # fmt: skip


def epoch_lists(steps: Any, epochs: Any, values: dict[str, Any], start: int) -> dict[str, Any]:
    """Epoch-end metrics from index ``start`` on, as plain lists (a few per epoch: no packing needed)."""
    return {
        "start": start,
        "step": steps[start:].tolist(),
        "epoch": epochs[start:].tolist(),
        "values": {name: column[start:].tolist() for name, column in values.items()},
    }
