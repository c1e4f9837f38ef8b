"""What a subscriber is sent of a run: one snapshot, then only what is new.

A :class:`Feed` remembers, for one subscriber, how far it has been sent: rows of the history, epoch-end
metrics, events, and the timeline object. :meth:`Feed.snapshot` is everything so far; :meth:`Feed.news`
is everything since, as wire messages. Starting each from the index the last one reached is what makes
a snapshot and the live stream join with no gap and no duplicate. The server decides when and to whom.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from lrwatch.protocol.events import RunStatus
from lrwatch.protocol.wire import rows_message

ROWS_PER_MESSAGE = 16384  # about 0.5 MB of base64 columns: a snapshot goes out in slices as its client reads


class Feed:
    """One subscriber's position in ``engine``'s run (history rows, epochs, events, timeline)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.rows_sent = 0
        self.epochs_sent = 0
        self.events_sent = 0
        self.timeline_sent: Any = None

    def snapshot(self, status: RunStatus) -> dict[str, Any]:
        """Everything so far, as one ``snapshot`` message; the feed continues from there. Its rows are the
        first slice (:data:`ROWS_PER_MESSAGE`); the rest follow as ``rows`` messages, and ``rows_total`` says
        how many there were, so that a monitor draws once it has them all."""
        history = self.engine.history
        n = len(history)
        first = min(n, ROWS_PER_MESSAGE)
        steps, epochs, values = history.validation()
        events = self.engine.events_since(0)
        self.rows_sent, self.epochs_sent, self.events_sent = first, len(steps), len(events)
        self.timeline_sent = self.engine.timeline
        return {
            "type": "snapshot",
            "status": status.to_dict(),
            "timeline": self.timeline_sent.to_dict(),
            "val_names": list(history.val_names),
            "rows_total": n,
            "rows": self._rows(0, first),
            "epochs": epoch_lists(steps, epochs, values, 0),
            "events": [e.to_dict() for e in events],
        }

    def news(self) -> Iterator[dict[str, Any]]:
        """What is new since the last snapshot or news: rows (in slices of :data:`ROWS_PER_MESSAGE`), epoch
        metrics, the timeline, events. Each message is counted as sent when it is yielded, so a reader that
        stops early (its client is not reading) goes on from there next time."""
        engine = self.engine
        n = len(engine.history)
        while n > self.rows_sent:
            start, self.rows_sent = self.rows_sent, min(n, self.rows_sent + ROWS_PER_MESSAGE)
            yield self._rows(start, self.rows_sent)
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
