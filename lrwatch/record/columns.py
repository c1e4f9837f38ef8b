"""Chunked, columnar storage for the metric history: fixed chunks of ``CHUNK`` rows, never copied to grow.

A doubling array holds up to 2× its rows and copies everything at each doubling; a list of fixed chunks
holds at most one chunk of slack and copies nothing. Two columns compress the common case exactly:

- :class:`Steps`: a chunk whose steps are consecutive (``first + i``) stores only ``first`` (0 B a row);
  the first step out of line gives it an ``int64`` array.
- :class:`Epochs`: a chunk whose epochs are ``step / k`` (the engine's own formula, so equal to the bit)
  or all NaN (epochs unknown) stores only ``k``; anything else gives it a ``float64`` array.

So a step row of ``step, epoch, lr, loss`` costs 16 B (``lr`` and ``loss`` as ``float64``): 15.3 MiB a
million. Reads (``col[a:b]``, ``col[rows]``) return new arrays; ``CHUNK`` is a multiple of
:data:`~lrwatch.record.history.BLOCK`, so a block never straddles two chunks.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

SHIFT = 16
CHUNK = 1 << SHIFT  # 65,536 rows
MASK = CHUNK - 1


def _gather(n: int, rows: np.ndarray, piece) -> np.ndarray:
    """``col[rows]`` for any int rows (clipped to ``n``), one ``piece`` call per chunk touched."""
    rows = np.asarray(rows, dtype=np.int64)
    chunk_of = rows >> SHIFT
    order = np.argsort(chunk_of, kind="stable") if len(rows) > 1 and np.any(np.diff(chunk_of) < 0) else None
    sorted_chunks = chunk_of if order is None else chunk_of[order]
    sorted_rows = rows if order is None else rows[order]
    out = None
    bounds = np.flatnonzero(np.diff(sorted_chunks)) + 1
    for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, len(rows)], strict=True):
        if hi <= lo:
            continue
        values = piece(int(sorted_chunks[lo]), sorted_rows[lo:hi] & MASK)
        if out is None:
            out = np.empty(len(rows), dtype=values.dtype)
        if order is None:
            out[lo:hi] = values
        else:
            out[order[lo:hi]] = values
    return out if out is not None else np.empty(0)


def _slice(n: int, key: slice) -> tuple[int, int]:
    start, stop, stride = key.indices(n)
    if stride != 1:
        raise IndexError("chunked columns take contiguous slices only")
    return start, max(start, stop)


class Floats:
    """A growing ``float64`` column in chunks."""

    dtype = np.float64

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def append(self, value: float) -> None:
        i = self.n & MASK
        if i == 0:
            self.chunks.append(np.empty(CHUNK, dtype=self.dtype))
        self.chunks[-1][i] = value
        self.n += 1

    def extend(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=self.dtype)
        done = 0
        while done < len(values):
            i = self.n & MASK
            if i == 0:
                self.chunks.append(np.empty(CHUNK, dtype=self.dtype))
            take = min(CHUNK - i, len(values) - done)
            self.chunks[-1][i : i + take] = values[done : done + take]
            done += take
            self.n += take

    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    def __getitem__(self, key: slice | np.ndarray | int) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            key = int(key) + (self.n if key < 0 else 0)
            return self.chunks[key >> SHIFT][key & MASK]
        if isinstance(key, slice):
            start, stop = _slice(self.n, key)
            if start == stop:
                return np.empty(0, dtype=self.dtype)
            first, last = start >> SHIFT, (stop - 1) >> SHIFT
            if first == last:
                return self.chunks[first][start & MASK : ((stop - 1) & MASK) + 1].copy()
            parts = [self.chunks[first][start & MASK :]]
            parts += self.chunks[first + 1 : last]
            parts.append(self.chunks[last][: ((stop - 1) & MASK) + 1])
            return np.concatenate(parts)
        return _gather(self.n, key, lambda c, offsets: self.chunks[c][offsets]).astype(self.dtype, copy=False)


class Steps:
    """Increasing step numbers in chunks; a consecutive chunk is stored as its first step only."""

    def __init__(self) -> None:
        self.firsts: list[int] = []
        self.arrays: list[np.ndarray | None] = []
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays if a is not None)

    def append(self, step: int) -> None:
        i = self.n & MASK
        if i == 0:
            self.firsts.append(int(step))
            self.arrays.append(None)
        else:
            array = self.arrays[-1]
            if array is None:
                if step != self.firsts[-1] + i:
                    array = self._materialize(i)
                    array[i] = step
            else:
                array[i] = step
        self.n += 1

    def _materialize(self, i: int) -> np.ndarray:
        array = np.empty(CHUNK, dtype=np.int64)
        array[:i] = self.firsts[-1] + np.arange(i)
        self.arrays[-1] = array
        return array

    def extend(self, steps: np.ndarray) -> None:
        steps = np.asarray(steps, dtype=np.int64)
        done = 0
        while done < len(steps):
            i = self.n & MASK
            take = min(CHUNK - i, len(steps) - done)
            part = steps[done : done + take]
            if i == 0:
                self.firsts.append(int(part[0]))
                self.arrays.append(None)
            array = self.arrays[-1]
            if array is None:
                expected = self.firsts[-1] + i
                if not (part[0] == expected and (take == 1 or np.all(np.diff(part) == 1))):
                    array = self._materialize(i)
            if array is not None:
                array[i : i + take] = part
            done += take
            self.n += take

    def _piece(self, c: int, offsets: np.ndarray) -> np.ndarray:
        array = self.arrays[c]
        return self.firsts[c] + offsets if array is None else array[offsets]

    def __getitem__(self, key: slice | np.ndarray | int) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            key = int(key) + (self.n if key < 0 else 0)
            return np.int64(self._piece(key >> SHIFT, np.array([key & MASK]))[0])
        if isinstance(key, slice):
            start, stop = _slice(self.n, key)
            return self[np.arange(start, stop)] if stop > start else np.empty(0, dtype=np.int64)
        return _gather(self.n, key, self._piece).astype(np.int64, copy=False)

    def searchsorted(self, step: int) -> int:
        """The first row whose step is ≥ ``step`` (steps increase)."""
        if not self.n:
            return 0
        c = max(bisect.bisect_right(self.firsts, step) - 1, 0)
        rows = min(CHUNK, self.n - (c << SHIFT))
        array = self.arrays[c]
        if array is None:
            inside = min(max(math.ceil(step - self.firsts[c]), 0), rows)
        else:
            inside = int(np.searchsorted(array[:rows], step))
        return (c << SHIFT) + inside


class Epochs:
    """Each row's epoch; a chunk whose epochs are all ``step / k`` (or all NaN: ``k = 0``) keeps ``k`` only."""

    def __init__(self) -> None:
        self.ks: list[int | None] = []  # None: not known yet (only step-0 rows so far)
        self.arrays: list[np.ndarray | None] = []
        self.n = 0

    def __len__(self) -> int:
        return self.n

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays if a is not None)

    @staticmethod
    def _derived(k: int | None, step: int) -> float:
        if k == 0:
            return math.nan
        return step / k if k else 0.0

    @staticmethod
    def _infer(step: int, epoch: float) -> int | bool | None:
        """The ``k`` this row shows (``0`` for NaN), ``None`` if any would do, ``False`` if none."""
        if math.isnan(epoch):
            return 0
        if step == 0 and epoch == 0:
            return None
        if step > 0 and epoch > 0:
            k = round(step / epoch)
            if k > 0 and step / k == epoch:
                return k
        return False

    def append(self, step: int, epoch: float, steps: Steps) -> None:
        """``steps`` already holds this row's step (it is read back on a materialisation)."""
        i = self.n & MASK
        if i == 0:
            self.ks.append(None)
            self.arrays.append(None)
        array = self.arrays[-1]
        if array is None:
            k = self.ks[-1]
            if k is None:
                inferred = self._infer(step, epoch)
                if inferred is not False:
                    self.ks[-1] = inferred
                    self.n += 1
                    return
            elif epoch == self._derived(k, step) or (k == 0 and math.isnan(epoch)):
                self.n += 1
                return
            array = self._materialize(i, steps)
        array[i] = epoch
        self.n += 1

    def _materialize(self, i: int, steps: Steps) -> np.ndarray:
        c = len(self.arrays) - 1
        array = np.empty(CHUNK, dtype=np.float64)
        array[:i] = self._values(c, np.arange(i), steps)
        self.arrays[-1] = array
        return array

    def _values(self, c: int, offsets: np.ndarray, steps: Steps) -> np.ndarray:
        array = self.arrays[c]
        if array is not None:
            return array[offsets]
        k = self.ks[c]
        if k == 0:
            return np.full(len(offsets), np.nan)
        chunk_steps = steps._piece(c, offsets).astype(np.float64)
        return chunk_steps / k if k else np.zeros(len(offsets))

    def extend(self, epochs: np.ndarray, steps: Steps) -> None:
        """``steps`` already holds these rows' steps; a whole chunk's part is checked at once."""
        epochs = np.asarray(epochs, dtype=np.float64)
        done = 0
        while done < len(epochs):
            i = self.n & MASK
            take = min(CHUNK - i, len(epochs) - done)
            part = epochs[done : done + take]
            if i == 0:
                self.ks.append(None)
                self.arrays.append(None)
            array = self.arrays[-1]
            if array is None:
                part_steps = steps[self.n : self.n + take]
                k = self.ks[-1]
                if k is None:
                    known = np.flatnonzero(part_steps > 0) if not np.isnan(part).any() else np.array([0])
                    k = self._infer(int(part_steps[known[0]]), float(part[known[0]])) if len(known) else None
                    k = None if k is False else k
                fits = (
                    bool(np.isnan(part).all())
                    if k == 0
                    else k is not None and bool(np.all(part == part_steps.astype(np.float64) / k))
                )
                if fits or (k is None and not np.any(part) and not np.any(part_steps)):
                    self.ks[-1] = k
                else:
                    array = self._materialize(i, steps)
            if array is not None:
                array[i : i + take] = part
            done += take
            self.n += take

    def get(self, key: slice | np.ndarray, steps: Steps) -> np.ndarray:
        if isinstance(key, slice):
            start, stop = _slice(self.n, key)
            key = np.arange(start, stop)
        if not len(key):
            return np.empty(0, dtype=np.float64)
        return _gather(self.n, key, lambda c, offsets: self._values(c, offsets, steps)).astype(np.float64, copy=False)
