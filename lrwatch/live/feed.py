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
ROWS_PER_MESSAGE = 16384  # about 0.5 MB of base64 columns: a snapshot goes out in slices as its client reads


class Feed:
    """One subscriber's position in ``engine``'s run (history rows, epochs, events, timeline)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.rows_sent = 0
        self.epochs_sent = 0
        self.events_sent = 0
        self.timeline_sent: Any = None
        self.metrics_sent: dict[str, int] = {}  # points of each step-level metric sent
        self.snapshot_rows: np.ndarray = np.zeros(0, dtype=np.int64)  # the snapshot's rows not sent yet

    @property
    def behind(self) -> bool:
        """Rows of the run (the snapshot's, or new ones) this subscriber has not been sent yet."""
        return len(self.snapshot_rows) > 0 or self.rows_sent < len(self.engine.history)

    def snapshot(self, status: RunStatus, max_rows: int | None = None) -> dict[str, Any]:
        """Everything so far, as one ``snapshot`` message; the feed continues from there.

        A long run is decimated here (``max_rows``): its last ``max_rows // 2`` rows exact (the recent
        window, the EMA's end), the rows before as the loss's min and max per bucket (block extrema, cost
        O(rows ÷ 256)); each metric alike. ``rows_through`` (and each metric's ``through``) says how many
        rows the message stands for, so the live stream goes on from there. The snapshot's rows go out in
        slices as the client reads (the server's memory budget per client): the message holds the first
        :data:`ROWS_PER_MESSAGE`, ``snapshot_rows`` messages the rest, and ``rows_total`` says how many there
        are, so that a monitor draws once it has them all.
        """
        max_rows = SNAPSHOT_ROWS if max_rows is None else max_rows  # 0: everything, exact
        history = self.engine.history
        n = len(history)
        order = self._snapshot_order(n, max_rows)
        self.snapshot_rows = order[ROWS_PER_MESSAGE:]
        steps, epochs, values = history.validation()
        events = self.engine.events_since(0)
        self.rows_sent, self.epochs_sent, self.events_sent = n, len(steps), len(events)
        self.timeline_sent = self.engine.timeline
        return {
            "type": "snapshot",
            "status": status.to_dict(),
            "timeline": self.timeline_sent.to_dict(),
            "val_names": list(history.val_names),
            "rows": self._rows_at(order[:ROWS_PER_MESSAGE]),
            "rows_total": len(order),
            "rows_through": n,
            "metrics": self._snapshot_metrics(min(max_rows, SNAPSHOT_POINTS) if max_rows else 0),
            "epochs": epoch_lists(steps, epochs, values, 0),
            "events": [e.to_dict() for e in events],
        }

    def _snapshot_order(self, n: int, max_rows: int) -> np.ndarray:
        """The rows a snapshot of ``n`` rows sends: all of them, or a decimated head and an exact tail."""
        if not max_rows or n <= max_rows:
            return np.arange(n, dtype=np.int64)
        tail = max_rows // 2
        head = np.asarray(self.engine.history.decimated_rows(n - tail, max_rows - tail), dtype=np.int64)
        return np.concatenate([head, np.arange(n - tail, n, dtype=np.int64)])

    def _rows_at(self, rows: np.ndarray) -> dict[str, Any]:
        start = int(rows[0]) if len(rows) else 0
        return rows_message(start, *self.engine.history.rows(rows), self.engine.timeline.steps_per_epoch)

    def _snapshot_metrics(self, max_rows: int) -> dict[str, Any]:
        history = self.engine.history
        self.metrics_sent = {}
        series = {}
        for name in history.metric_names():
            count = history.metric_length(name)
            # bounded by count: points logged meanwhile go with the news, which starts there
            if not max_rows or count <= max_rows:
                steps, values = history.metric(name, 0, count)
            else:
                tail = max_rows // 2
                head_steps, head_values = history.metric_points(name, count - tail, max_rows - tail)
                tail_steps, tail_values = history.metric(name, count - tail, count)
                steps, values = np.concatenate([head_steps, tail_steps]), np.concatenate([head_values, tail_values])
            series[name] = (0, steps[: len(values)], values)
            self.metrics_sent[name] = count
        message = metrics_message(series)["series"]
        for name, entry in message.items():
            entry["through"] = self.metrics_sent[name]
        return message

    def news(self) -> Iterator[dict[str, Any]]:
        """What is new since the last snapshot or news: the snapshot's remaining rows, then new rows (each
        in slices of :data:`ROWS_PER_MESSAGE`), metrics, epoch metrics, the timeline, events. Each message is
        counted as sent when it is yielded, so a reader that stops early (its client is not reading) goes on
        from there next time."""
        while len(self.snapshot_rows):
            part, self.snapshot_rows = self.snapshot_rows[:ROWS_PER_MESSAGE], self.snapshot_rows[ROWS_PER_MESSAGE:]
            yield {**self._rows_at(part), "type": "snapshot_rows"}
        engine = self.engine
        n = len(engine.history)
        while n > self.rows_sent:
            start, self.rows_sent = self.rows_sent, min(n, self.rows_sent + ROWS_PER_MESSAGE)
            yield self._rows(start, self.rows_sent)
        metrics = self._metrics()
        if metrics["series"]:
            yield metrics
        steps, epochs, values = engine.history.validation()
        if len(steps) > self.epochs_sent:
            start, self.epochs_sent = self.epochs_sent, len(steps)
            yield {"type": "epochs", **epoch_lists(steps, epochs, values, start)}
        timeline = engine.timeline
        if timeline is not self.timeline_sent:
            self.timeline_sent = timeline
            yield {"type": "timeline", "timeline": timeline.to_dict()}
        for event in engine.events_since(self.events_sent):
            self.events_sent += 1
            yield {"type": "event", "index": self.events_sent - 1, "event": event.to_dict()}

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
