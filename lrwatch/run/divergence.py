"""Divergence: is this step's loss diverged, and what to restore if the run rolls back.

A loss diverges when it is not finite, or when it is above ``spike_factor`` times the mean of the
last ``window`` finite losses (once ``warmup`` of them were seen). The watch keeps that window and,
every ``snapshot_every`` good steps, an in-memory snapshot of the weights (through a
:class:`Snapshotter`), so that a rollback has somewhere to go. What a divergence leads to (a pause,
a stop, a rollback with the LR halved) is the engine's to do; this class only judges and remembers.
"""

from __future__ import annotations

import math
import sys
from collections import deque
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Cause = Literal["non-finite", "spike"]
Action = Literal["pause", "stop", "rollback", "auto"]


@dataclass(frozen=True)
class DivergencePolicy:
    """What to do when the loss diverges.

    ``pause`` (the monitor's default) holds at the step and offers a rollback; ``stop`` (headless
    default) ends the run; ``rollback`` restores the last good in-memory snapshot of model and
    optimizer (taken every ``snapshot_every`` good steps), halves the LR and goes on, and stops after
    ``max_rollbacks`` of them; ``auto`` (a run started for a monitor) pauses while a monitor is
    attached and stops otherwise, so a run nobody watches never waits for an answer.
    """

    action: Action = "stop"
    spike_factor: float = 10.0
    window: int = 50
    warmup: int = 20
    snapshot_every: int = 100
    max_rollbacks: int = 3

    def __post_init__(self) -> None:
        if self.action not in ("pause", "stop", "rollback", "auto"):
            raise ValueError(f"on-divergence must be pause, stop or rollback (got {self.action!r})")
        if not self.spike_factor > 1:
            raise ValueError(f"spike factor must be > 1 (got {self.spike_factor})")

    def action_now(self, watched: bool) -> Action:
        """The action for a divergence now: ``auto`` is ``pause`` while watched, else ``stop``."""
        if self.action == "auto":
            return "pause" if watched else "stop"
        return self.action


class Snapshotter(Protocol):
    def snapshot(self) -> Any: ...

    def restore(self, state: Any) -> None: ...


class DivergenceWatch:
    """Judges each step's loss; keeps the recent window and the last good snapshot."""

    def __init__(self, policy: DivergencePolicy, snapshotter: Snapshotter | None = None) -> None:
        self.policy = policy
        self.snapshotter = snapshotter
        self.rollbacks = 0
        self._recent: deque[float] = deque(maxlen=policy.window)
        self._recent_sum = 0.0  # Σ _recent, kept as it slides (summed afresh every window, against drift)
        self._added = 0
        self._min_count = min(policy.warmup, policy.window)
        self._factor, self._window, self._snapshot_every = policy.spike_factor, policy.window, policy.snapshot_every
        self._good_since_snapshot = 0
        self._snapshot: tuple[int, Any] | None = None
        self.auto_snapshot = True  # False under DDP: the engine calls snapshot_if_due at sync steps

    def observe(self, loss: float, steps_done: int) -> Cause | None:
        """``None`` for a good loss (remembered; a snapshot every ``snapshot_every`` of them, labelled
        ``steps_done``), else why it diverged. Every step: the window's mean is a running sum."""
        recent = self._recent
        n = len(recent)
        if loss - loss != 0:  # NaN or ±inf
            cause: Cause = "non-finite"
        elif n >= self._min_count and loss > self._factor * self._recent_sum / n:
            cause = "spike"
        else:
            window = self._window
            if n == window:
                self._recent_sum -= recent[0]
            recent.append(loss)
            self._added += 1
            if self._added >= window:
                self._added, self._recent_sum = 0, math.fsum(recent)
            else:
                self._recent_sum += loss
            self._good_since_snapshot += 1
            due = self._good_since_snapshot >= self._snapshot_every
            if due and self.auto_snapshot and self.snapshotter is not None:
                self._snapshot = (steps_done, self.snapshotter.snapshot())
                self._good_since_snapshot = 0
            return None
        self._good_since_snapshot = 0
        return cause

    def remember(self, losses: list[float]) -> None:
        """Losses the engine's fast step took without judging each, all good (each was at most the bound of
        :meth:`fast_limits`): the window and the snapshot count move as if each had been observed."""
        self._recent.extend(losses)
        self._recent_sum, self._added = math.fsum(self._recent), 0
        self._good_since_snapshot += len(losses)

    def fast_limits(self) -> tuple[float, float, int]:
        """``(bound, floor, steps)`` for the engine's fast step: for the next ``steps`` steps a loss ≤ ``bound``
        is good by :meth:`observe`'s rule (the window's mean is at least its lowest loss, so ``factor`` × the
        lowest loss seen is a bound; ``floor`` is that lowest, −∞ while spikes are not judged yet). A NaN or ±∞
        is never ≤ it. ``steps`` ends before the step that judges its first spike or takes a snapshot."""
        steps = 1 << 62
        if self.auto_snapshot and self.snapshotter is not None:
            steps = self._snapshot_every - self._good_since_snapshot - 1
        n = len(self._recent)
        if n < self._min_count:
            return sys.float_info.max, -math.inf, min(steps, self._min_count - n)
        floor = min(self._recent)
        return spike_bound(self._factor, floor), floor, steps

    def snapshot_if_due(self, step: int) -> None:
        """Snapshot at ``step`` if ``snapshot_every`` steps passed since the last one (by step, not by
        good losses, so that every rank of a DDP run snapshots at the same steps)."""
        last = self._snapshot[0] if self._snapshot is not None else 0
        if self.snapshotter is not None and step - last >= self.policy.snapshot_every:
            self._snapshot = (step, self.snapshotter.snapshot())

    @property
    def can_roll_back(self) -> bool:
        return self.snapshotter is not None

    def why_not_roll_back(self) -> str | None:
        """Why a rollback now would give up (no snapshot yet, or out of rollbacks); ``None``: it can."""
        if self._snapshot is None:
            return "no good snapshot yet"
        if self.rollbacks >= self.policy.max_rollbacks:
            return f"{self.rollbacks} rollbacks"
        return None

    def roll_back(self) -> int:
        """Restore the last good snapshot; the step it was taken at. Call after :meth:`why_not_roll_back`."""
        assert self._snapshot is not None and self.snapshotter is not None
        step, state = self._snapshot
        self.snapshotter.restore(state)
        self.rollbacks += 1
        self._recent.clear()
        self._recent_sum, self._added = 0.0, 0
        return step


def spike_bound(factor: float, floor: float) -> float:
    """``factor × floor``, a hair lower: a loss at most this is no spike even with the window's running sum
    rounded."""
    bound = factor * floor
    return bound - abs(bound) * 1e-12


class DivergenceResponse:
    """What the run does about a diverged loss, at a step boundary: pause (and wait for an answer), stop,
    or roll back to the last good snapshot with the LR halved. ``engine`` is the run's
    :class:`~lrwatch.run.engine.Engine`; ``watch`` judges the losses (``None``: no divergence policy)."""

    def __init__(self, engine: Any, watch: DivergenceWatch | None) -> None:
        self.engine = engine
        self.watch = watch
        self.pending: tuple[int, float | None, str] | None = None  # (step, loss, cause) not yet acted on
        self.paused = False  # paused at a divergence alert: a rollback, a resume or a stop is expected

    def observe(self, step: int, loss: float) -> None:
        """Judge step ``step``'s loss; a diverged one waits in :attr:`pending` for the next boundary."""
        if self.watch is not None and self.pending is None:
            cause = self.watch.observe(loss, step + 1)
            if cause is not None:
                self.pending = (step, loss, cause)

    def remember(self, losses: list[float]) -> None:
        """Good losses taken by the engine's fast step (:meth:`DivergenceWatch.remember`)."""
        if self.watch is not None:
            self.watch.remember(losses)

    def fast_limits(self) -> tuple[float, float, int]:
        """:meth:`DivergenceWatch.fast_limits`; with no policy, any loss goes (a NaN still takes the whole way)."""
        if self.watch is None:
            return math.inf, -math.inf, 1 << 62
        return self.watch.fast_limits()

    def action(self) -> str:
        """The policy's action now (``auto``: pause while a monitor is attached, else stop); ``""``: none."""
        return self.watch.policy.action_now(watched=self.engine.monitors > 0) if self.watch is not None else ""

    @property
    def can_roll_back(self) -> bool:
        return self.watch is not None and self.watch.can_roll_back

    def act(self, action: str, rank: int | None = None, at_step: int | None = None) -> None:
        """Act on the pending divergence at the step it happened (under DDP: at the sync step where the
        ranks learn of it, the same on all of them; the event names the rank and its step)."""
        engine = self.engine
        if rank is not None and rank != engine.sync.rank:  # another rank's loss: only its step is known here
            step, loss, cause = at_step, None, "another rank"
        else:
            step, loss, cause = self.pending
        self.pending = None
        where = {} if rank is None else {"rank": rank}
        engine.emit("divergence", loss=loss, lr=engine.lr, cause=cause, action=action, at_step=step, **where)
        if action == "pause" and engine.state == "running":
            engine.state = "paused"
            self.paused = True
            engine.emit("pause", reason="divergence")
        elif action == "rollback":
            self.rollback()
        else:
            shown = f"{loss:.4g}" if loss is not None else "unknown"
            engine.stop_now(f"divergence at step {step}: loss {shown} with lr {engine.lr:.4g}", checkpoint=False)

    def rollback(self) -> None:
        """Restore the last good snapshot and halve the LR from here; stop when out of rollbacks or snapshots."""
        engine, watch = self.engine, self.watch
        why = watch.why_not_roll_back()
        if why is not None:
            engine.stop_now(f"divergence at step {engine.step_index - 1}: gave up ({why})", checkpoint=False)
            return
        snapshot_step = watch.roll_back()
        engine.emit("rollback", to_step=snapshot_step, count=watch.rollbacks)
        engine.set_timeline(engine.timeline.scale(engine.step_index, 0.5))
        engine.emit_switch(scale=0.5, reason="rollback")

    def unanswered(self) -> str | None:
        """While paused at an alert: why to stop now (the policy is ``auto`` and no monitor is left to answer)."""
        if self.paused and self.engine.monitors == 0 and self.watch.policy.action == "auto":
            return f"divergence at step {self.engine.step_index - 1}: the monitor left"
        return None

    def snapshot_if_due(self, step: int) -> None:
        """A DDP sync step while running: every rank keeps the same snapshot."""
        if self.watch is not None:
            self.watch.snapshot_if_due(step)
