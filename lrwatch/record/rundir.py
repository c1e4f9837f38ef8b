"""The run directory: ``metrics.csv``, ``events.jsonl`` and ``run.json``, written and parsed here only.

``metrics.csv`` has one row per optimizer step (``step`` is its 0-based index, ``epoch`` its
fractional position ``step / steps_per_epoch``, ``lr`` the LR it used, ``loss`` its training
loss) and one row per epoch end (``step`` = steps done, ``epoch`` = epochs done, ``lr`` and
``loss`` empty, the validation columns filled). Rows are buffered and flushed at least once a
second; events are written and flushed as they happen; :meth:`RunWriter.close` flushes on
every exit path.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lrwatch.protocol.events import Event
from lrwatch.record.safefile import AppendLog, WriteError, remove_leftovers, replace_text

FLUSH_SECONDS = 1.0
BACKLOG_BYTES = 32 << 20  # per file: rows (~60 bytes each) and events a full disk keeps waiting


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


def _num(value: float) -> str:
    return repr(float(value))


def _step_row(step: int, epoch: float, lr: float, loss: float) -> str:
    """``step,epoch,lr,loss`` of one optimizer step (``metrics.csv``, a race's candidate); the epoch is
    empty when the run's epochs are unknown."""
    return f"{step},{_num(epoch) if math.isfinite(epoch) else ''},{_num(lr)},{_num(loss)}"


class RunWriter:
    """Writes a run directory. A write that fails (a full disk, a read-only directory) never raises into
    training: rows and events wait in memory (bounded, :data:`BACKLOG_BYTES`) and go out with the next
    write that succeeds; :attr:`trouble` says what failed, and ``on_trouble`` is called once per episode."""

    def __init__(
        self, run_dir: str | Path, val_names: tuple[str, ...] = ("val_loss", "val_acc"), resume_at: int | None = None
    ) -> None:
        """A new run directory, or (``resume_at``) an existing one whose rows from that step on are dropped."""
        self.path = Path(run_dir)
        self.path.mkdir(parents=True, exist_ok=True)
        remove_leftovers(self.path)
        self.val_names = tuple(val_names)
        header = ",".join(("step", "epoch", "lr", "loss", *self.val_names)) + "\n"
        metrics_path = self.path / "metrics.csv"
        if resume_at is not None and metrics_path.exists():
            replace_text(metrics_path, "".join([header, *_rows_before(metrics_path, resume_at)]))
        else:
            replace_text(metrics_path, header)  # a run killed before its first second still opens
        self._metrics = AppendLog(metrics_path, limit=BACKLOG_BYTES)
        self._events = AppendLog(self.path / "events.jsonl", truncate=resume_at is None, limit=BACKLOG_BYTES)
        self._empty_val = "," * len(self.val_names)
        self._last_flush = time.monotonic()
        self.closed = False
        self.trouble: str | None = None  # what could not be written, while it waits
        self.on_trouble: Callable[[str | None], None] | None = None  # a problem began (text) or ended (None)
        self._said = False

    def write_run_info(self, info: dict[str, Any]) -> None:
        """``run.json`` (atomically); a failure is reported as trouble, never raised."""
        try:
            replace_text(self.path / "run.json", json.dumps(info, indent=2, default=str) + "\n")
        except WriteError as exc:
            self._report(f"run.json not written ({exc})")

    def add_step(self, step: int, epoch: float, lr: float, loss: float) -> None:
        self._metrics.add(f"{_step_row(step, epoch, lr, loss)}{self._empty_val}\n")
        now = time.monotonic()
        if now - self._last_flush >= FLUSH_SECONDS:
            self.flush(now)

    def add_epoch(self, step: int, epoch: float, metrics: dict[str, float]) -> None:
        values = ",".join(_num(metrics[k]) if k in metrics else "" for k in self.val_names)
        self._metrics.add(f"{step},{_num(epoch) if math.isfinite(epoch) else ''},,,{values}\n")  # no epochs: empty
        self.flush()

    def add_event(self, event: Event) -> None:
        if self.closed:
            return
        data = {k: _json_safe(v) for k, v in event.to_dict().items()}
        self._events.add(json.dumps(data, default=str, allow_nan=False) + "\n")
        self._write()

    def flush(self, now: float | None = None) -> None:
        if self.closed:
            return
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
        return self._metrics.dropped + self._events.dropped

    def close(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._metrics.close()
        self._events.close()


def _float(text: str) -> float:
    return float(text) if text else math.nan


MetricRow = tuple[int, float, float, float] | tuple[int, float, dict[str, float]]


def parse_metrics_line(columns: list[str], line: str) -> MetricRow:
    """One data line of ``metrics.csv`` (header ``columns``): ``(step, epoch, lr, loss)`` for a step
    row, ``(step, epoch, {metric: value})`` for an epoch row (its loss is empty). ``ValueError`` if not."""
    fields = line.rstrip("\r").split(",")
    if len(fields) != len(columns):
        raise ValueError(f"{len(fields)} fields, expected {len(columns)}")
    step, epoch = int(fields[0]), _float(fields[1])
    if fields[3]:
        return step, epoch, _float(fields[2]), float(fields[3])
    return step, epoch, {name: _float(v) for name, v in zip(columns[4:], fields[4:], strict=True) if v}


def _rows_before(metrics_path: Path, step: int) -> list[str]:
    """Complete step rows before ``step`` and epoch rows up to it (a cut-off or unparsable line is dropped)."""
    kept = []
    with metrics_path.open(encoding="utf-8") as f:
        columns = next(f, "").strip().split(",")
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                row = parse_metrics_line(columns, line.rstrip("\n"))
            except ValueError:
                continue
            if row[0] < step or (len(row) == 3 and row[0] <= step):
                kept.append(line)
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
    return replace_text(path, "lr,loss,smoothed\n" + "".join(f"{_num(a)},{_num(b)},{_num(c)}\n" for a, b, c in rows))


def race_path(run_dir: str | Path, number: int, name: str) -> Path:
    """``RUN_DIR/races/<number>/<name>.csv``: a race candidate's rows."""
    return Path(run_dir) / "races" / str(number) / f"{name}.csv"


def write_race_rows(run_dir: str | Path, number: int, name: str, rows: list[tuple[int, float, float, float]]) -> Path:
    """A race candidate's steps, as ``metrics.csv`` writes them: header ``step,epoch,lr,loss``."""
    path = race_path(run_dir, number, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{_step_row(*row)}\n" for row in rows)
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
        return row[0] + 1 if len(row) == 4 else row[0]  # a step row's index; an epoch row's steps done
    return None
