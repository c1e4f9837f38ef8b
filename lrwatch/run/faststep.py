"""The engine's fast step: most steps of a run go a short way between two planned boundaries.

A step of training pays for what lrwatch does in it, so the common step is short: with nothing queued,
scripted, due or paused, and lrwatch driving float LRs, :meth:`FastStep.step` appends the step's row (to the
history and to ``metrics.csv``'s batch), remembers its loss for the divergence window, sets the next LR from
the block in force and returns. A boundary plans how far that holds (:meth:`FastStep._plan_fast`): to the end
of the LR block, the step before a scripted command or the run's end, the next divergence snapshot, the
next second (``metrics.csv`` flushed, the machine sampled); a command submitted from any thread, an event,
a new timeline end it at once. A loss that might be a divergence takes the whole way: the bound is
``factor × the lowest loss of the window and since`` (the window's mean is at least its lowest), so each
short step's loss is one :class:`~lrwatch.run.divergence.DivergenceWatch` would judge good.
``tests/test_fast_step.py`` holds the short way to the whole way's rows, LRs and events, byte for byte.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from lrwatch.run.divergence import spike_bound

_monotonic = time.monotonic


class FastStep:
    """Mixed into :class:`~lrwatch.run.engine.Engine`, whose attributes it reads."""

    fast_until: int
    step_index: int
    steps_taken: int
    epochs_known: bool
    control: Any
    divergence: Any
    commands: Any
    system: Any
    history: Any
    log: Any
    state: str
    sync: Any
    _awaiting: deque
    _ends_at: int | None
    _timeline: Any

    def _init_fast(self) -> None:
        self.fast_until = 0
        self._to_history = self.history.row_sink()
        self._to_disk = self.log.writer.row_sink() if self.log.writer is not None else deque(maxlen=0).append
        self._unjudged: list[float] = []  # losses taken the short way, not yet in the divergence window

    def step(self, loss: float | None, *, watch_loss: bool = True, metrics: dict[str, float] | None = None) -> bool:
        """Record the step just taken with its ``loss`` (and step-level ``metrics``: ``{name: float}``); prepare
        the next. ``False``: stop now. ``loss=None``: the loss is still on its device and comes later, through
        :meth:`deliver`. ``watch_loss=False``: there is no loss for this step (``loss`` is NaN, not a divergence).

        Most steps go a short way: between two boundaries planned by :meth:`_plan_fast` (nothing queued,
        scripted, due or paused; lrwatch drives float LRs) a step with a float loss that is surely no divergence
        appends its row, sets the next LR from the block in force and returns. Everything else, and at least
        one step per LR block and per second, goes the whole way (:meth:`_step`)."""
        s = self.step_index
        if (
            s < self.fast_until
            and loss.__class__ is float
            and loss <= self._spike_above  # False for NaN
            and (metrics is None or "tokens" not in metrics)  # tokens are counted on the way (_record)
            and watch_loss
            and _monotonic() < self._tick_at
        ):
            base, block, group0 = self._lr_base, self._lr_block, self._group0
            lr = block[s - base]
            if group0["lr"] == lr:  # nothing moved it since (a scheduler still stepping goes the whole way)
                t = s + 1
                self.step_index = t
                self.steps_taken += 1
                row = (s, s / self._steps_per_epoch if self.epochs_known else math.nan, lr, loss, metrics)
                self._to_history(row)
                self._to_disk(row)
                if self._judging:
                    self._unjudged.append(loss)
                    if loss < self._loss_floor:  # a new lowest loss: a lower bound for a spike
                        self._loss_floor, self._spike_above = loss, spike_bound(self._spike_factor, loss)
                lr = block[t - base]
                group0["lr"] = lr
                for group, lrs in self._lr_others:
                    group["lr"] = lrs[t - base]
                control = self.control
                control.lr, control.current_step = lr, t
                return True
        return self._step(s, loss, watch_loss, metrics)

    def _leave_fast(self) -> None:
        """Something changed between boundaries (a command came, any thread): the next step goes the whole way."""
        self.fast_until = 0

    def _plan_fast(self) -> None:
        """At a boundary: up to which step :meth:`step` may go the short way, and what it needs for it."""
        self.fast_until = 0
        if self.state != "running" or self.sync is not None or self._awaiting or self.divergence.pending is not None:
            return
        block = self.control.fast_block()
        t = self.step_index
        if block is None or not block[0] <= t < block[0] + len(block[1][0][1]):
            return
        base, pairs = block
        bound, floor, steps = self.divergence.fast_limits()
        until = min(base + len(pairs[0][1]) - 1, t + steps)  # the last short step sets an LR of this block
        scripted = self.commands.next_scripted(t + 1)
        if scripted is not None:
            until = min(until, scripted - 1)  # the step before goes the whole way, to its boundary
        if self._ends_at is not None:
            until = min(until, self._ends_at - 1)
        self._lr_base, (self._group0, self._lr_block), self._lr_others = base, pairs[0], pairs[1:]
        self._steps_per_epoch = self._timeline.steps_per_epoch
        self._spike_above, self._loss_floor = bound, floor
        self._judging = self.divergence.watch is not None
        watch = self.divergence.watch
        self._spike_factor = watch.policy.spike_factor if watch is not None else math.inf
        self._tick_at = self.system.next_at
        self.fast_until = until
        if self.commands.waiting():  # one came while this was planned
            self.fast_until = 0
