"""The run socket's wire format, version 2: newline-delimited JSON objects, each with a ``type``.

Strict JSON (no NaN/Infinity: non-finite floats travel as the strings ``"nan"``, ``"inf"``,
``"-inf"``, as in ``events.jsonl``), UTF-8, one object per line. A conversation::

    client → {"type": "hello", "version": 2, "client": "monitor", "owner": false}
    server → {"type": "hello", "version": 2, "pid": 4242, "run_dir": "/abs/run", "lrwatch": "0.1.0"}
    client → {"type": "status"}                       server → {"type": "status", "status": {...}}
    client → {"type": "subscribe"}                    server → {"type": "snapshot", ...} then, as the run goes,
                                                {"type": "rows"|"metrics"|"epochs"|"event"|"timeline"|"status"}
    client → {"type": "command", "id": 7, "command": {"command": "switch", "spec": "exp"}}
    server → {"type": "result", "id": 7, "event": {"event": "switch", ...}}
    client → {"type": "detach"}                       (the owner leaves on purpose; the run goes on)
    server → {"type": "error", "message": "..."}       (a bad request: one line, nothing changed)

Metric rows travel as columns (``step``, ``epoch``, ``lr``, ``loss``), each the base64 of the
little-endian array (int64 steps, float64 values): exact, compact, and one line for a million rows.
Columns the receiver can rebuild exactly are left out: ``step`` when the steps run on without a gap
(``first_step`` instead), ``epoch`` when every epoch is ``step / steps_per_epoch`` (the engine's own
computation; ``steps_per_epoch`` instead). Step-level metrics (any names) travel as ``metrics`` messages
(and a snapshot's ``metrics``), one entry per metric, each its own ``start``. A long run's snapshot is
decimated (``rows_through``, and each metric's ``through``: how many rows or points it stands for); a
version-1 client is refused at its hello with one line naming both versions. ``start`` is the first
row's index in the run's history, so a client joins a snapshot and the live stream with no gap and no
duplicate. A client's line may be at most :data:`MAX_CLIENT_LINE` bytes.
"""

from __future__ import annotations

import base64
import json
import math
import os
from typing import Any

import numpy as np

VERSION = 2  # 2: metrics messages, decimated snapshots (rows_through); a version-1 client is told so
MAX_CLIENT_LINE = 64 * 1024  # a client's request: a command is a few hundred bytes
MAX_SERVER_LINE = 1 << 30  # a snapshot of a long run is one line (about 43 bytes a row)
REQUEST_TYPES = ("hello", "status", "subscribe", "command", "detach")


class WireError(ValueError):
    """A line that is not a valid message; the text is one line for the peer."""


def _safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


class Packed(str):
    """A base64 string: JSON-safe as it is, so :func:`encode` splices it in without escaping it
    (escaping 40 MB of a long run's snapshot took longer than everything else in it)."""


_NONCE = os.urandom(8).hex()  # placeholders no string from outside can spell


def encode(message: dict[str, Any]) -> bytes:
    """One message as one line of strict JSON."""
    packed: list[bytes] = []

    def hide(value: Any) -> Any:
        if isinstance(value, Packed):
            packed.append(value.encode("ascii"))
            return f"\x00{_NONCE}{len(packed) - 1}"
        if isinstance(value, dict):
            return {k: hide(v) for k, v in value.items()}
        return value

    text = json.dumps(hide(_safe(message)), separators=(",", ":"), allow_nan=False, default=str).encode()
    for i, data in enumerate(packed):
        text = text.replace(b'"\\u0000%s%d"' % (_NONCE.encode(), i), b'"' + data + b'"', 1)
    return text + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """A line → a message (a JSON object with a string ``type``); :class:`WireError` otherwise."""
    try:
        message = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError(f"not a JSON line ({type(exc).__name__})") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError("expected a JSON object with a string 'type'")
    return message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def to_float(value: Any) -> float:
    """A float that may have travelled as ``"nan"``/``"inf"``/``"-inf"``."""
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    return float(value)


def pack(array: np.ndarray, dtype: str) -> Packed:
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()
    return Packed(base64.b64encode(data).decode("ascii"))


def unpack(text: str, dtype: str) -> np.ndarray:
    data = base64.b64decode(text, validate=True)
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).astype(dtype, copy=False)


def rows_message(
    start: int,
    steps: np.ndarray,
    epochs: np.ndarray,
    lrs: np.ndarray,
    losses: np.ndarray,
    steps_per_epoch: int | None = None,
) -> dict:
    """Rows ``start, start + 1, ...`` of a history; the columns that can be rebuilt exactly are left out."""
    message: dict[str, Any] = {"type": "rows", "start": int(start), "count": len(steps)}
    if len(steps) and np.array_equal(steps, np.arange(steps[0], steps[0] + len(steps))):
        message["first_step"] = int(steps[0])
    else:
        message["step"] = pack(steps, "int64")
    if steps_per_epoch and np.array_equal(epochs, steps / steps_per_epoch):
        message["steps_per_epoch"] = int(steps_per_epoch)
    else:
        message["epoch"] = pack(epochs, "float64")
    message["lr"] = pack(lrs, "float64")
    message["loss"] = pack(losses, "float64")
    return message


def unpack_rows(message: dict[str, Any]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(start, steps, epochs, lrs, losses)`` of a ``rows`` message; :class:`WireError` if malformed."""
    try:
        start, count = int(message["start"]), int(message["count"])
        if "step" in message:
            steps = unpack(message["step"], "int64")
        else:
            first = int(message["first_step"])
            steps = np.arange(first, first + count, dtype=np.int64)
        if "epoch" in message:
            epochs = unpack(message["epoch"], "float64")
        else:
            k = int(message["steps_per_epoch"])
            if k <= 0:
                raise ValueError("steps_per_epoch must be > 0")
            epochs = steps / k
        columns = (steps, epochs, unpack(message["lr"], "float64"), unpack(message["loss"], "float64"))
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"malformed rows ({type(exc).__name__})") from None
    if {len(c) for c in columns} != {count}:
        raise WireError("malformed rows (columns of different lengths)")
    return (start, *columns)


def printable(text: str) -> str:
    """``text`` safe to show on a terminal: control characters (escape codes, newlines, C1 controls)
    written as Python escapes (``\\x1b``), so that text from the wire or a record never drives the
    terminal or splits a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def metrics_message(series: dict[str, tuple[int, np.ndarray, np.ndarray]]) -> dict[str, Any]:
    """Step-level metrics (``grad_norm``, ``acc``, ...): per name, its points from index ``start`` on, each
    column packed (steps as ``first_step`` when they run on without a gap)."""
    out: dict[str, Any] = {}
    for name, (start, steps, values) in series.items():
        entry: dict[str, Any] = {"start": int(start), "count": len(steps), "value": pack(values, "float64")}
        if len(steps) and np.array_equal(steps, np.arange(steps[0], steps[0] + len(steps))):
            entry["first_step"] = int(steps[0])
        else:
            entry["step"] = pack(steps, "int64")
        out[name] = entry
    return {"type": "metrics", "series": out}


def unpack_metrics(message: dict[str, Any]) -> dict[str, tuple[int, np.ndarray, np.ndarray]]:
    """``{name: (start, steps, values)}`` of a ``metrics`` message; :class:`WireError` if malformed."""
    out = {}
    try:
        for name, entry in message["series"].items():
            start, count = int(entry["start"]), int(entry["count"])
            if "step" in entry:
                steps = unpack(entry["step"], "int64")
            else:
                first = int(entry["first_step"])
                steps = np.arange(first, first + count, dtype=np.int64)
            values = unpack(entry["value"], "float64")
            if len(steps) != count or len(values) != count:
                raise ValueError("columns of different lengths")
            out[str(name)] = (start, steps, values)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise WireError(f"malformed metrics ({type(exc).__name__})") from None
    return out


class LineBuffer:
    """Bytes in, complete lines out; a line longer than ``limit`` raises :class:`WireError`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._data = bytearray()
        self._scanned = 0  # no newline before this offset: a long line is scanned once, not per chunk

    @property
    def partial(self) -> bool:
        """Whether a line has begun and not ended yet."""
        return bool(self._data)

    def feed(self, data: bytes) -> list[bytes]:
        self._data += data
        lines = []
        while True:
            end = self._data.find(b"\n", self._scanned)
            if end < 0:
                self._scanned = len(self._data)
                break
            if end > self.limit:
                raise WireError(f"a line longer than {self.limit} bytes")
            lines.append(bytes(self._data[:end]))
            del self._data[: end + 1]
            self._scanned = 0
        if len(self._data) > self.limit:
            raise WireError(f"a line longer than {self.limit} bytes")
        return lines
