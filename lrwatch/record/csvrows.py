"""The text of ``metrics.csv``'s lines: ``step,epoch,lr,loss`` then one cell per metric column.

Every number is written as the shortest text that reads back as the same float (Python's ``repr``), so a
reader gets exactly what was logged. A batch of plain step rows (no metrics, finite LR and loss: nearly every
row of a run) is formatted by orjson in one call, ~15× faster than ``repr`` row by row (it writes the same
floats, in its own spelling: ``1e-7`` for ``1e-07``); a step of training pays for its row's text, so this is
what keeps lrwatch's per-step cost under a PyTorch scheduler's (``make bench``: ``step_tax``). Anything else
(an epoch's validation row, a NaN) is written row by row; rows with metrics go by orjson when all is finite.
"""

from __future__ import annotations

import math
from operator import itemgetter
from typing import Any

import numpy as np
import orjson

CHUNK_ROWS = 512  # rows with metrics turned into cells at a time
Row = tuple[Any, ...]  # (step, epoch, lr, loss, metrics | None); lr None: an epoch row (metrics: its values)


def num(value: float) -> str:
    return repr(float(value))


def step_row(step: int, epoch: float, lr: float, loss: float) -> str:
    """``step,epoch,lr,loss`` of one optimizer step (``metrics.csv``, a race's candidate); the epoch is
    empty when the run's epochs are unknown."""
    return f"{step},{num(epoch) if math.isfinite(epoch) else ''},{num(lr)},{num(loss)}"


def row_text(row: Row, index: dict[str, int], empty: str) -> str:
    """One line: a step row or an epoch row, with its metrics in their columns (``index``: name → cell);
    ``empty`` is the line's end when no metric is filled (``,,,\\n``)."""
    step, epoch, lr, loss, metrics = row
    if not metrics and lr is not None and epoch - epoch == 0:  # the common row: a step, a finite epoch
        return f"{step},{epoch!r},{float(lr)!r},{float(loss)!r}{empty}"
    cells = [""] * len(index)
    if metrics:
        for name, value in metrics.items():
            cells[index[name]] = repr(float(value))
    if lr is None:  # an epoch row: lr and loss empty
        head = f"{step},{num(epoch) if math.isfinite(epoch) else ''},,"
    else:
        head = step_row(step, epoch, lr, loss)
    return head + ("," + ",".join(cells) if cells else "") + "\n"


def rows_text(rows: list[Row], index: dict[str, int], empty: str) -> str:
    """The lines of ``rows``, in order (see the module's docstring for which way each batch goes)."""
    if rows and any(map(itemgetter(4), rows)):
        return _with_metrics(rows, index, empty)
    if rows and _plain(rows):
        try:
            body = orjson.dumps(rows)  # b'[[0,0.0,0.05,1.5,null],[1,...,null]]': one array per row
        except TypeError:  # a value orjson does not write as a float (a numpy scalar, a tensor)
            body = b""
        if body:
            end = empty.encode()
            lines = body[2:-7].replace(b",null],[", end) + end  # each row's metrics (null) become its empty cells
            return lines.replace(b",null,", b",,").decode()  # a NaN epoch (epochs unknown): an empty cell
    return "".join(row_text(row, index, empty) for row in rows)


def _with_metrics(rows: list[Row], index: dict[str, int], empty: str) -> str:
    """Step rows with metrics, by orjson too when every LR, loss and metric value is a finite float (then the
    only ``null`` cells are the ones left empty: a metric not logged at that step, an unknown epoch)."""
    dicts = list(filter(None, map(itemgetter(4), rows)))
    if (
        None not in map(itemgetter(2), rows)  # no epoch row
        and math.isfinite(sum(map(itemgetter(2), rows)))
        and math.isfinite(sum(map(itemgetter(3), rows)))
        and math.isfinite(sum(map(sum, map(dict.values, dicts))))
    ):
        names = sorted(index, key=index.__getitem__)
        parts = []
        for start in range(0, len(rows), CHUNK_ROWS):  # a few rows' cells at a time: nothing piles up for the GC
            table = [(*row[:4], *map((row[4] or {}).get, names)) for row in rows[start : start + CHUNK_ROWS]]
            try:
                body = orjson.dumps(table)
            except TypeError:  # a value orjson does not write as a float (a numpy scalar, a tensor)
                break
            parts.append((body[2:-2].replace(b"],[", b"\n") + b"\n").replace(b"null", b""))
        else:
            return b"".join(parts).decode()
    return "".join(row_text(row, index, empty) for row in rows)


def _plain(rows: list[Row]) -> bool:
    """Only step rows without metrics, with finite LRs and losses (orjson writes NaN and ±∞ as ``null``; a sum
    is finite only if each term is), and epochs all finite or all NaN (a run whose epochs are unknown)."""
    if any(map(itemgetter(4), rows)) or None in map(itemgetter(2), rows):
        return False
    if not (math.isfinite(sum(map(itemgetter(2), rows))) and math.isfinite(sum(map(itemgetter(3), rows)))):
        return False
    if math.isfinite(sum(map(itemgetter(1), rows))):
        return True
    return bool(np.isnan(np.fromiter(map(itemgetter(1), rows), np.float64, len(rows))).all())
