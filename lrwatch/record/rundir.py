"""The run directory: ``metrics.csv``, ``events.jsonl`` and ``run.json``, written and parsed here only.

``metrics.csv`` has one row per optimizer step (``step`` is its 0-based index, ``epoch`` its
fractional position ``step / steps_per_epoch``, ``lr`` the LR it used, ``loss`` its training
loss, and any metric it was logged with in that metric's own column) and one row per epoch end
(``step`` = steps done, ``epoch`` = epochs done, ``lr`` and ``loss`` empty, its metrics filled). A metric
first seen mid-run adds its column (the file rewritten atomically). Rows are buffered and flushed at
least once a second; events are written and flushed as they happen; :meth:`RunWriter.close` flushes on
every exit path.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from operator import itemgetter
from pathlib import Path
from typing import Any

from lrwatch.protocol.events import Event
from lrwatch.record.csvrows import num, rows_text, step_row
from lrwatch.record.safefile import AppendLog, WriteError, remove_leftovers, replace_file, replace_text

FLUSH_SECONDS = 1.0
BACKLOG_BYTES = 32 << 20  # per file: rows (~60 bytes each) and events a full disk keeps waiting
MAX_PENDING = 1 << 16  # rows held before a flush whatever the time
PENDING_LIMIT = 1 << 20  # step rows kept while metrics.csv cannot be widened (a full disk)


def run_dir_problem(path: str | Path) -> str | None:
    """What keeps ``path`` from being a run directory, in the words every command uses; ``None``: it is one."""
    p = Path(path)
    if not p.exists():
        return f"{path}: no such directory"
    if not p.is_dir():
        return f"{path}: not a directory"
    if not any((p / name).is_file() for name in ("run.json", "events.jsonl", "live.json")):  # live.json: starting
        return f"{path}: not an lrwatch run directory (no run.json)"
    return None


def default_run_dir(root: str | Path = "runs") -> Path:
    return Path(root) / time.strftime("%Y%m%d-%H%M%S")


def _json_safe(value: Any) -> Any:
    """Strict JSON has no NaN or Infinity: those become the strings "nan", "inf", "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


FIXED_COLUMNS = ("step", "epoch", "lr", "loss")


class RunWriter:
    """``metrics.csv`` (one column per metric, widened when a name first comes), ``events.jsonl``, ``run.json``.

    Step rows wait in memory as tuples and become text at a flush (at least once a second, at every epoch
    end, pause and exit path), so a step costs an append. A metric name first seen mid-run rewrites the
    file with the wider header (atomically: a reader sees the old or the new file, never half of one); the
    rows already written get empty cells there. A write that fails (a full disk, a read-only directory)
    never raises into training: rows and events wait in memory (bounded, :data:`BACKLOG_BYTES`) and go out
    with the next write that succeeds; :attr:`trouble` says what failed, ``on_trouble`` is called once per
    episode.
    """

    def __init__(
        self, run_dir: str | Path, val_names: tuple[str, ...] = ("val_loss", "val_acc"), resume_at: int | None = None
    ) -> None:
        """A new run directory, or (``resume_at``) an existing one whose rows from that step on are dropped."""
        self.path = Path(run_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.path)
        self.val_names = tuple(val_names)
        metrics_path = self.metrics_path = self.path / "metrics.csv"
        self.extra: list[str] = list(self.val_names)  # the columns after step,epoch,lr,loss
        if resume_at is not None and metrics_path.exists():
            columns = _header(metrics_path)
            if columns[:4] == list(FIXED_COLUMNS):
                self.extra = [*columns[4:], *(n for n in self.val_names if n not in columns[4:])]
            kept = [self._header_line(), *_rows_before(metrics_path, resume_at, len(self.extra))]
            replace_text(metrics_path, "".join(kept))
        else:
            replace_text(metrics_path, self._header_line())  # a run killed before its first second still opens
        self._metrics = AppendLog(metrics_path, limit=BACKLOG_BYTES)
        self._events = AppendLog(self.path / "events.jsonl", truncate=resume_at is None, limit=BACKLOG_BYTES)
        self._index = {name: i for i, name in enumerate(self.extra)}
        self._empty = "," * len(self.extra) + "\n"
        self._pending: list[tuple[Any, ...]] = []  # (step, epoch, lr, loss, metrics | None); lr None: an epoch row
        self._pending_dropped = 0  # rows dropped while a widening could not be written (bounded backlog)
        self._last_flush = time.monotonic()
        self.closed = False
        self.trouble: str | None = None  # what could not be written, while it waits
        self.on_trouble: Callable[[str | None], None] | None = None  # a problem began (text) or ended (None)
        self._said = False

    def _header_line(self, extra: list[str] | None = None) -> str:
        return ",".join((*FIXED_COLUMNS, *(self.extra if extra is None else extra))) + "\n"

    def write_run_info(self, info: dict[str, Any]) -> None:
        """``run.json`` (atomically); a failure is reported as trouble, never raised."""
        try:
            replace_text(self.path / "run.json", json.dumps(info, indent=2, default=str) + "\n")
        except WriteError as exc:
            self._report(f"run.json not written ({exc})")

    def add_step(
        self, step: int, epoch: float, lr: float, loss: float, metrics: dict[str, float] | None = None
    ) -> None:
        self._pending.append((step, epoch, lr, loss, metrics))
        if len(self._pending) >= MAX_PENDING:
            self.flush()

    def row_sink(self) -> Callable[[tuple[Any, ...]], None]:
        """:meth:`add_step` of a whole row tuple ``(step, epoch, lr, loss, None)``, with no size check (the
        engine's fast step; its boundaries, at least every LR block, check)."""
        return self._pending.append

    def flush_due(self, now: float) -> None:
        """The engine's tick, about once a second: the rows held so far to disk (at most a second's)."""
        if self._pending or self.trouble is not None:
            self.flush(now)

    def add_epoch(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        self._pending.append((step, epoch, None, None, metrics))
        self.flush()

    def _widen(self) -> bool:
        """New metric names in the pending rows: the file rewritten with them as new columns. ``False`` when
        that could not be written (the rows wait; the file is as it was)."""
        names = dict.fromkeys(itertools.chain.from_iterable(filter(None, map(itemgetter(4), self._pending))))
        new = [name for name in names if name not in self._index]  # in the order they first came
        if not new:
            return True
        if not self._metrics.flush():  # the file must be whole before it is rewritten
            return False
        extra, pad = [*self.extra, *new], ("," * len(new)).encode()

        def write(dst: Any) -> None:
            with self.metrics_path.open("rb") as src:
                next(src, None)
                dst.write(self._header_line(extra).encode("utf-8"))
                for line in src:
                    if line.endswith(b"\n"):
                        dst.write(line[:-1] + pad + b"\n")

        try:
            replace_file(self.metrics_path, write)
        except WriteError as exc:
            self._report(f"metrics.csv not widened for {', '.join(new)} ({exc}); its rows wait in memory")
            return False
        self._metrics.close()
        self._metrics = AppendLog(self.metrics_path, limit=BACKLOG_BYTES)  # the new file
        self.extra = extra
        self._index = {name: i for i, name in enumerate(self.extra)}
        self._empty = "," * len(self.extra) + "\n"
        return True

    def add_event(self, event: Event) -> None:
        if self.closed:
            return
        data = {k: _json_safe(v) for k, v in event.to_dict().items()}
        self._events.add(json.dumps(data, default=str, allow_nan=False) + "\n")
        self._write()

    def flush(self, now: float | None = None) -> None:
        if self.closed:
            return
        if self._pending:
            if not any(map(itemgetter(4), self._pending)) or self._widen():  # no metrics: no new column either
                self._metrics.add(rows_text(self._pending, self._index, self._empty))
                self._pending.clear()
            elif len(self._pending) > PENDING_LIMIT:  # a widening that cannot be written: keep the newest
                self._pending_dropped += len(self._pending) - PENDING_LIMIT
                del self._pending[: len(self._pending) - PENDING_LIMIT]
        self._write()
        self._last_flush = time.monotonic() if now is None else now

    def _write(self) -> None:
        ok = self._events.flush() & self._metrics.flush()
        if ok:
            if self.trouble is not None:
                self.trouble = None
                self._said = False
                if self.on_trouble is not None:
                    self.on_trouble(None)
            return
        error = self._metrics.error or self._events.error
        self._report(f"{error}; rows and events wait in memory (up to {BACKLOG_BYTES >> 20} MiB each) "
                     "and are written when there is room")  # fmt: skip

    def _report(self, text: str) -> None:
        self.trouble = text
        if not self._said:
            self._said = True  # before the call: the warning it logs comes back here
            if self.on_trouble is not None:
                self.on_trouble(text)

    @property
    def backlog(self) -> int:
        """Bytes waiting for the disk."""
        return len(self._metrics.pending) + len(self._events.pending)

    @property
    def dropped(self) -> int:
        """Lines dropped because the backlog was full."""
        return self._metrics.dropped + self._events.dropped + self._pending_dropped

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._metrics.close()
        self._events.close()


def _float(text: str) -> float:
    return float(text) if text else math.nan


class StepRow(tuple):
    """A step row, ``(step, epoch, lr, loss)``, with the metrics logged with it in :attr:`metrics`."""

    metrics: dict[str, float]

    def __new__(cls, step: int, epoch: float, lr: float, loss: float, metrics: dict[str, float]) -> StepRow:
        row = super().__new__(cls, (step, epoch, lr, loss))
        row.metrics = metrics
        return row


EpochRow = tuple[int, float, dict[str, float]]
MetricRow = StepRow | EpochRow


def is_epoch_row(row: MetricRow) -> bool:
    """An epoch end's row (``(step, epoch, metrics)``), not a step's."""
    return len(row) == 3


def parse_metrics_line(columns: list[str], line: str) -> MetricRow:
    """One data line of ``metrics.csv`` (header ``columns``): a :class:`StepRow` ``(step, epoch, lr, loss)`` with
    its ``metrics`` (the filled cells after ``loss``), or ``(step, epoch, {metric: value})`` for an epoch row
    (its loss is empty). ``ValueError`` if not."""
    fields = line.rstrip("\r").split(",")
    if len(fields) != len(columns):
        raise ValueError(f"{len(fields)} fields, expected {len(columns)}")
    step, epoch = int(fields[0]), _float(fields[1])
    metrics = {name: float(v) for name, v in zip(columns[4:], fields[4:], strict=True) if v}
    if fields[3]:
        return StepRow(step, epoch, _float(fields[2]), float(fields[3]), metrics)
    return step, epoch, metrics


def _header(metrics_path: Path) -> list[str]:
    with metrics_path.open(encoding="utf-8") as f:
        return next(f, "").strip().split(",")


def _rows_before(metrics_path: Path, step: int, width: int | None = None) -> list[str]:
    """Complete step rows before ``step`` and epoch rows up to it (a cut-off or unparsable line is dropped),
    padded to ``width`` columns after ``loss``."""
    kept = []
    with metrics_path.open(encoding="utf-8") as f:
        columns = next(f, "").strip().split(",")
        pad = "," * max((width or 0) - (len(columns) - 4), 0)
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                row = parse_metrics_line(columns, line.rstrip("\n"))
            except ValueError:
                continue
            if row[0] < step or (is_epoch_row(row) and row[0] <= step):
                kept.append(line[:-1] + pad + "\n")
    return kept


def read_metric_rows(metrics_path: Path) -> Iterator[MetricRow]:
    """The rows of a ``metrics.csv`` that parse, in order (a resume's history reads them back)."""
    if not metrics_path.exists():
        return
    with metrics_path.open(encoding="utf-8", newline="") as f:
        columns = next(f, "").strip().split(",")
        for line in f:
            if not line.endswith("\n"):
                return  # cut off mid-write
            try:
                yield parse_metrics_line(columns, line.rstrip("\n"))
            except ValueError:
                continue


LR_FIND_NAME = "lr_find.csv"


def write_lr_find(run_dir: str | Path, rows: list[tuple[float, float, float]]) -> Path:
    """``RUN_DIR/lr_find.csv``: header ``lr,loss,smoothed``, one row per batch of an LR range test."""
    path = Path(run_dir) / LR_FIND_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_text(path, "lr,loss,smoothed\n" + "".join(f"{num(a)},{num(b)},{num(c)}\n" for a, b, c in rows))


def race_path(run_dir: str | Path, number: int, name: str) -> Path:
    """``RUN_DIR/races/<number>/<name>.csv``: a race candidate's rows."""
    return Path(run_dir) / "races" / str(number) / f"{name}.csv"


def write_race_rows(run_dir: str | Path, number: int, name: str, rows: list[tuple[int, float, float, float]]) -> Path:
    """A race candidate's steps, as ``metrics.csv`` writes them: header ``step,epoch,lr,loss``."""
    path = race_path(run_dir, number, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{step_row(*row)}\n" for row in rows)
    return replace_text(path, "step,epoch,lr,loss\n" + lines)


def read_lr_find(run_dir: str | Path) -> list[tuple[float, float, float]]:
    """The rows of ``RUN_DIR/lr_find.csv``."""
    lines = (Path(run_dir) / LR_FIND_NAME).read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != "lr,loss,smoothed":
        raise ValueError(f"{run_dir}/{LR_FIND_NAME}: header is not lr,loss,smoothed")
    return [tuple(float(v) for v in line.split(",")) for line in lines[1:]]  # type: ignore[misc]


def parse_event_line(line: str) -> Event:
    """One line of ``events.jsonl`` → an :class:`Event`; ``ValueError`` if it is not one."""
    try:
        return Event.from_dict(json.loads(line))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # not JSON, or not an event's shape
        raise ValueError(f"not an event ({type(exc).__name__})") from None


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    """``run.json``: the configuration, the initial timeline, versions; ``{}`` if missing or unreadable."""
    try:
        info = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def run_info(config: dict[str, Any], timeline: dict[str, Any], started_at: float) -> dict[str, Any]:
    """What ``run.json`` holds: the configuration, the initial timeline, versions, platform, argv, start."""
    import platform
    import sys

    import numpy as np
    import torch

    return {
        "config": config,
        "timeline": timeline,
        "versions": {
            "lrwatch": lrwatch_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
        },
        "platform": platform.platform(),
        "argv": masked_argv(sys.argv),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
    }


SECRET_WORDS = ("token", "key", "apikey", "secret", "password", "passwd", "pwd")
MASK = "***"


def _secret_name(name: str) -> bool:
    """Whether an option's name says it holds a secret: ``--hf-token``, ``--wandb_api_key``, ``PASSWORD``."""
    parts = re.split(r"[-_.]+", name.lstrip("-").lower())
    return any(part in SECRET_WORDS or part.endswith(("token", "secret", "password")) for part in parts if part)


def masked_argv(argv: list[str]) -> list[str]:
    """``argv`` as ``run.json`` keeps it: the values of options whose names say token, key, secret or password
    masked (``--hf-token=***``, ``--api-key ***``, ``PASSWORD=***``), the rest as given."""
    out: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next and not arg.startswith("-"):
            out.append(MASK)
            mask_next = False
            continue
        mask_next = False
        name, sep, _value = arg.partition("=")
        if sep and _secret_name(name):
            out.append(f"{name}={MASK}")
        else:
            out.append(arg)
            mask_next = arg.startswith("-") and not sep and _secret_name(arg)
    return out


def lrwatch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lrwatch")
    except PackageNotFoundError:
        return "unknown"


def steps_done(run_dir: str | Path) -> int | None:
    """How many steps ``metrics.csv`` says were done, read from the file's end only (``lrwatch ls`` on a long
    run); ``None`` when it has no complete row."""
    try:
        with (Path(run_dir) / "metrics.csv").open("rb") as f:
            columns = f.readline().decode("utf-8", errors="replace").strip().split(",")
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = f.read().split(b"\n")[:-1]  # the part after the last newline is not a complete line
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = parse_metrics_line(columns, line.decode("utf-8", errors="replace"))
        except ValueError:
            continue
        return row[0] if is_epoch_row(row) else row[0] + 1  # an epoch row's steps done; a step row's index
    return None
