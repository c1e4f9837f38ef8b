"""Thread-safe metric history with amortised growth, min/max decimation and an EMA helper.

The training thread appends one row per step (O(1) amortised, no per-step allocation beyond
the occasional doubling); readers take decimated snapshots so that what a plot draws is bounded
by its width, not by the run's length.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import itemgetter, methodcaller

import numpy as np

from lrwatch.record.columns import Epochs, Floats, Steps
from lrwatch.record.decimate import BlockExtrema, decimate_series

STEP_COLUMNS = ("epoch", "lr", "loss")
SETTLE_ROWS = 4096  # step rows appended before they join the columns (a read settles them at once)


@dataclass
class Snapshot:
    """A decimated copy of the history for drawing. ``val`` maps metric → (steps, values)."""

    length: int
    version: int
    steps_lr: np.ndarray
    lr: np.ndarray
    steps_loss: np.ndarray
    loss: np.ndarray
    val: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


class Series:
    """One step-level metric (``grad_norm``, ``acc``, ...): the steps it was logged at and its values."""

    def __init__(self) -> None:
        self.steps = Steps()
        self.values = Floats()
        self.extrema = BlockExtrema()

    def __len__(self) -> int:
        return len(self.values)

    def nbytes(self) -> int:
        return self.steps.nbytes() + self.values.nbytes()


class MetricHistory:
    """Per-step ``step, epoch, lr, loss``, any per-step metrics (each its own series: a metric logged every
    50 steps holds 50× fewer rows), and per-epoch metrics (validation), in chunked columns
    (:mod:`lrwatch.record.columns`: 16 B a step row)."""

    def __init__(self, val_names: tuple[str, ...] = ("val_loss", "val_acc"), capacity: int = 0) -> None:
        del capacity  # chunks grow by themselves
        self._lock = threading.Lock()
        self._pending: deque[tuple[int, float, float, float, dict[str, float] | None]] = deque()
        self._n = 0
        self._steps = Steps()
        self._epochs = Epochs()
        self._cols = {"lr": Floats(), "loss": Floats()}
        self.val_names = tuple(val_names)
        self._val_steps: list[int] = []
        self._val_epochs: list[float] = []
        self._val: dict[str, list[float]] = {name: [] for name in self.val_names}
        self._metrics: dict[str, Series] = {}
        self._extrema = {name: BlockExtrema() for name in ("lr", "loss")}
        self.version = 0

    def __len__(self) -> int:
        self._settle()
        return self._n

    def _settle(self) -> None:
        """Move the rows appended since into the columns, at once (any thread: the deque is thread-safe)."""
        pending = self._pending
        if not pending:
            return
        with self._lock:
            count = len(pending)
            if not count:
                return
            rows = [pending.popleft() for _ in range(count)]
            self._steps.extend(np.fromiter(map(itemgetter(0), rows), np.int64, count))
            self._epochs.extend(np.fromiter(map(itemgetter(1), rows), np.float64, count), self._steps)
            self._cols["lr"].extend(np.fromiter(map(itemgetter(2), rows), np.float64, count))
            self._cols["loss"].extend(np.fromiter(map(itemgetter(3), rows), np.float64, count))
            self._n += count
            logged = [row for row in rows if row[4]] if any(map(itemgetter(4), rows)) else []
            if logged:
                self._settle_metrics(np.fromiter(map(itemgetter(0), logged), np.int64, len(logged)),
                                     list(map(itemgetter(4), logged)))  # fmt: skip
            self._extrema["loss"].update(self._cols["loss"], self._n)  # kept as rows come: a snapshot's decimation
            self.version += 1

    def _settle_metrics(self, at: np.ndarray, dicts: list[dict[str, float]]) -> None:
        """Each metric's points of a batch at once (in C): when every step logged the same names in the same
        order (the usual loop), one array of all values; else by presence, name by name."""
        if len(set(map(tuple, dicts))) == 1:
            names = list(dicts[0])
            flat = itertools.chain.from_iterable(map(dict.values, dicts))  # no list per row: nothing for the GC
            table = np.fromiter(flat, np.float64, len(dicts) * len(names)).reshape(len(dicts), -1)
            columns = [(name, at, table[:, j]) for j, name in enumerate(names)]
        else:
            columns = []
            for name in dict.fromkeys(itertools.chain.from_iterable(dicts)):  # in the order they first came
                present = np.fromiter(map(methodcaller("__contains__", name), dicts), bool, len(dicts))
                values = np.fromiter(map(methodcaller("get", name, 0.0), dicts), np.float64, len(dicts))
                columns.append((name, at[present], values[present]))
        for name, steps, values in columns:
            series = self._metrics.get(name)
            if series is None:
                series = self._metrics[name] = Series()
            series.steps.extend(steps)
            series.values.extend(values)
            series.extrema.update(series.values, len(series))

    def nbytes(self) -> int:
        """Bytes held by the columns (chunks allocated, the last one counted whole)."""
        self._settle()
        with self._lock:
            own = self._steps.nbytes() + self._epochs.nbytes() + sum(c.nbytes() for c in self._cols.values())
            return own + sum(s.nbytes() for s in self._metrics.values())

    def append(self, step: int, epoch: float, lr: float, loss: float, metrics: dict[str, float] | None = None) -> None:
        """One step row. It waits in a deque (an append, the training loop's whole cost) and joins the columns
        in batches of :data:`SETTLE_ROWS`, or at once when anything reads the history."""
        pending = self._pending
        pending.append((step, epoch, lr, loss, metrics))
        if len(pending) >= SETTLE_ROWS:
            self._settle()

    def row_sink(self) -> Callable[[tuple[int, float, float, float, None]], None]:
        """:meth:`append` of a whole row tuple ``(step, epoch, lr, loss, None)``, with no size check: for a
        caller that settles often enough itself (the engine's fast step, which reaches a boundary every
        :data:`~lrwatch.run.groups.LR_BLOCK` steps, where :meth:`append` checks)."""
        return self._pending.append

    def _add_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            series = self._metrics.get(name)
            if series is None:
                series = self._metrics[name] = Series()
            series.steps.append(step)
            series.values.append(value)

    def add_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Step-level metrics of ``step`` without a step row (a framework's logging step, sampled readings)."""
        self._settle()
        with self._lock:
            self._add_metrics(step, metrics)
            self.version += 1

    def extend(self, steps: np.ndarray, epochs: np.ndarray, lrs: np.ndarray, losses: np.ndarray) -> None:
        """Append many rows at once (a run's history arriving over its socket)."""
        self._settle()
        with self._lock:
            self._steps.extend(steps)
            self._epochs.extend(epochs, self._steps)
            self._cols["lr"].extend(lrs)
            self._cols["loss"].extend(losses)
            self._n += len(steps)
            self._extrema["loss"].update(self._cols["loss"], self._n)
            self.version += 1

    def extend_metric(self, name: str, steps: np.ndarray, values: np.ndarray) -> None:
        """Append many points of one step-level metric (its steps after those it holds)."""
        with self._lock:
            series = self._metrics.get(name)
            if series is None:
                series = self._metrics[name] = Series()
            series.steps.extend(steps)
            series.values.extend(values)
            series.extrema.update(series.values, len(series))
            self.version += 1

    def append_epoch(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        self._settle()
        with self._lock:
            for name in metrics:
                if name not in self._val:
                    self._val[name] = [np.nan] * len(self._val_steps)
            self._val_steps.append(step)
            self._val_epochs.append(epoch)
            for name, values in self._val.items():
                values.append(float(metrics.get(name, np.nan)))
            self.version += 1

    def column(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """A copy of ``step`` or one of ``epoch, lr, loss`` for rows ``start:stop``."""
        self._settle()
        with self._lock:
            stop = self._n if stop is None else min(stop, self._n)
            if name == "step":
                return self._steps[start:stop]
            if name == "epoch":
                return self._epochs.get(slice(start, stop), self._steps)
            return self._cols[name][start:stop]

    def metric_names(self) -> list[str]:
        """The step-level metrics logged so far, in the order they first came."""
        self._settle()
        with self._lock:
            return list(self._metrics)

    def metric_length(self, name: str) -> int:
        """Points of a step-level metric so far."""
        self._settle()
        with self._lock:
            series = self._metrics.get(name)
            return len(series) if series is not None else 0

    def metric(self, name: str, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of a step-level metric's points ``start … stop − 1`` (``stop`` None: all it holds
        now; empty if never logged)."""
        self._settle()
        with self._lock:
            series = self._metrics.get(name)
            if series is None:
                return np.empty(0, dtype=np.int64), np.empty(0)
            n = len(series) if stop is None else min(stop, len(series))
            return series.steps[start:n], series.values[start:n]

    def metric_snapshot(
        self, name: str, max_points: int, since_step: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one step-level metric, decimated as :meth:`snapshot` does the loss."""
        self._settle()
        with self._lock:
            series = self._metrics.get(name)
            if series is None:
                return np.empty(0, dtype=np.int64), np.empty(0)
            n = len(series)
            start = series.steps.searchsorted(since_step) if since_step is not None else 0
            series.extrema.update(series.values, n)
            rows, values = decimate_series(series.values, series.extrema, start, n, max_points)
            return series.steps[rows], values

    def last(self) -> dict[str, float] | None:
        self._settle()
        with self._lock:
            if self._n == 0:
                return None
            i = self._n - 1
            epoch = float(self._epochs.get(np.array([i]), self._steps)[0])
            return {"step": int(self._steps[i]), "epoch": epoch, **{k: float(v[i]) for k, v in self._cols.items()}}

    def last_metrics(self) -> dict[str, tuple[int, float]]:
        """Each step-level metric's last ``(step, value)``."""
        self._settle()
        with self._lock:
            return {k: (int(s.steps[-1]), float(s.values[-1])) for k, s in self._metrics.items() if len(s)}

    def validation(self) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(steps, epochs, {metric: values})`` of every epoch end."""
        self._settle()
        with self._lock:
            return (
                np.array(self._val_steps, dtype=np.int64),
                np.array(self._val_epochs, dtype=np.float64),
                {k: np.array(v, dtype=np.float64) for k, v in self._val.items()},
            )

    def snapshot(self, max_points: int, since_step: int | None = None) -> Snapshot:
        """Decimated ``lr`` and ``loss`` (min/max per bucket), from ``since_step`` on if given.

        The cost grows with the rows in range ÷ ``BLOCK``, not with the rows themselves.
        """
        self._settle()
        with self._lock:
            n, version = self._n, self.version
            start = 0
            if since_step is not None and n:
                start = self._steps.searchsorted(since_step)
            picked = {}
            for name in ("lr", "loss"):
                self._extrema[name].update(self._cols[name], n)
                rows, values = decimate_series(self._cols[name], self._extrema[name], start, n, max_points)
                picked[name] = (self._steps[rows], values)
        val_steps, _, val = self.validation()
        keep = val_steps >= (since_step or 0)
        (xs_lr, lr), (xs_loss, loss) = picked["lr"], picked["loss"]
        return Snapshot(n, version, xs_lr, lr, xs_loss, loss, {k: (val_steps[keep], v[keep]) for k, v in val.items()})

    def decimated_rows(self, stop: int, max_points: int) -> np.ndarray:
        """Rows of ``0 … stop − 1`` that stand for them in ``max_points``: the loss's min and max per bucket
        (from the block extrema: cost O(rows ÷ BLOCK)); all of them when they are fewer."""
        self._settle()
        with self._lock:
            self._extrema["loss"].update(self._cols["loss"], self._n)
            rows, _ = decimate_series(self._cols["loss"], self._extrema["loss"], 0, min(stop, self._n), max_points)
            return rows

    def rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(steps, epochs, lrs, losses)`` of the given rows."""
        self._settle()
        rows = np.asarray(rows, dtype=np.int64)
        with self._lock:
            return (self._steps[rows], self._epochs.get(rows, self._steps), self._cols["lr"][rows],
                    self._cols["loss"][rows])  # fmt: skip

    def metric_points(self, name: str, stop: int, max_points: int) -> tuple[np.ndarray, np.ndarray]:
        """A metric's points ``0 … stop − 1`` in at most ``max_points`` (min and max per bucket)."""
        self._settle()
        with self._lock:
            series = self._metrics[name]
            series.extrema.update(series.values, len(series))
            rows, values = decimate_series(series.values, series.extrema, 0, min(stop, len(series)), max_points)
            return series.steps[rows], values

    def steps_at(self, rows: np.ndarray) -> np.ndarray:
        """The steps of the given rows."""
        self._settle()
        with self._lock:
            return self._steps[np.asarray(rows, dtype=np.int64)]

    def row_of(self, step: int) -> int:
        """The first row at or after ``step``."""
        self._settle()
        with self._lock:
            return min(self._steps.searchsorted(step), self._n)


class Ema:
    """Exponential moving average ``s_i = w·s_{i−1} + (1 − w)·x_i``, ``s_0 = x_0``, kept incrementally.

    ``w`` is the smoothing (TensorBoard's slider): 0 is the raw series, 0.999 very smooth;
    values in (0, 0.05) are taken as 0.05 so the chunked closed form stays in range.
    Non-finite inputs are skipped (the average carries over).
    """

    MAX_CHUNK = 8192

    def __init__(self, smoothing: float = 0.9) -> None:
        w = min(max(float(smoothing), 0.0), 0.999)
        self.smoothing = 0.0 if w == 0 else max(w, 0.05)
        # The closed form divides by w^(i+1) within a chunk: keep w^chunk above 1e-280 (float64 reaches
        # 1e-308), so a smooth average takes long chunks (4 a million rows at 0.9 were 15,625 of 64).
        self.chunk = 64 if w == 0 else int(min(self.MAX_CHUNK, max(64, 280 / -math.log10(self.smoothing))))
        self.values = np.empty(0, dtype=np.float64)
        self._sums = np.zeros(1, dtype=np.float64)  # _sums[i]: Σ of the finite values before row i
        self._finite_from: int | None = None  # the EMA is NaN only before the first finite input
        self._n = 0
        self._last = np.nan

    def __len__(self) -> int:
        return self._n

    def extend(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64)
        start = self._n
        self._extend(x)
        added = self.values[start : self._n]
        finite = np.isfinite(added)
        if len(self._sums) < len(self.values) + 1:
            self._sums = np.resize(self._sums, len(self.values) + 1)
        self._sums[start + 1 : self._n + 1] = self._sums[start] + np.cumsum(np.where(finite, added, 0.0))
        if self._finite_from is None and finite.any():
            self._finite_from = start + int(np.argmax(finite))

    def _extend(self, x: np.ndarray) -> None:
        if self._n + len(x) > len(self.values):
            self.values = np.resize(self.values, max(2 * len(self.values), self._n + len(x), 1024))
        w = self.smoothing
        if w == 0:
            self.values[self._n : self._n + len(x)] = x
            self._n += len(x)
            return
        last = self._last
        for lo in range(0, len(x), self.chunk):
            chunk = x[lo : lo + self.chunk].copy()
            finite = np.isfinite(chunk)
            lead = 0  # positions before the first finite value ever seen stay NaN
            if np.isnan(last) and finite.any():
                lead = int(np.argmax(finite))
                last = chunk[lead]
            # Within a chunk: s_i = w^(i+1)·s_{-1} + (1−w)·Σ_j≤i w^(i−j)·x_j, skipping non-finite x_j.
            chunk[~finite] = 0.0
            weight = np.where(finite, 1.0 - w, 0.0)
            carry = np.cumprod(np.where(finite, w, 1.0))
            scaled = np.cumsum(weight * chunk / carry)
            out = carry * (last + scaled)
            if np.isnan(last):
                out[:] = np.nan
            out[:lead] = np.nan
            self.values[self._n : self._n + len(out)] = out
            self._n += len(out)
            if len(out):
                last = out[-1]
        self._last = last

    def series(self) -> np.ndarray:
        return self.values[: self._n]

    def column_means(self, start: int, columns: int) -> tuple[np.ndarray, np.ndarray]:
        """``(rows, values)``: the EMA from row ``start`` as one mean per column, cost O(columns).

        Rows ``start..n − 1`` split into ``columns`` equal runs; each gives its middle row and the mean
        of its values (from running sums). A smoothed line is a trend: min and max per column would
        draw the noise the smoothing took out (the raw loss's band shows the extremes). Up to
        ``columns`` rows come back as they are.
        """
        n = self._n
        if n - start <= columns:
            rows = np.arange(start, n)
            return rows, self.values[start:n].copy()
        edges = np.linspace(start, n, columns + 1).round().astype(np.int64)
        lo, hi = edges[:-1], edges[1:]
        counted_from = np.maximum(lo, n if self._finite_from is None else self._finite_from)
        count = np.maximum(hi - counted_from, 0)
        total = self._sums[hi] - self._sums[lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return (lo + hi - 1) // 2, means
