"""Race candidate schedules from one snapshot of a live run; keep one, or none.

At a step boundary, step F (the fork), the run's state is copied to host memory: model, optimizer,
RNG states (the data position is F itself: ``batches(F)``). Each candidate c, continuing the current
schedule first, then trains steps F … F+H−1 from that snapshot on the same batches, its LR from
``timeline.switch(F, spec_c)`` (continuing: the timeline as it is), and is evaluated once at the end.

- train loss of c: the EMA of its losses, ``s_i = 0.9·s_{i−1} + 0.1·loss_i``, ``s_0 = loss_0``;
- ``val_loss`` of c: ``evaluate()`` after its H steps (without ``evaluate=``: NaN, ranked by train loss);
- Δ val of c: ``val_c − val_continue``; the winner has the lowest ``val_loss`` (train loss without it).

Keeping c loads c's end state and timeline and makes its H steps the run's; not keeping restores the
snapshot bit for bit, and the run goes on as if the race had not happened. A short horizon favours
lower LRs (Wu et al. 2018, short-horizon bias): the horizon defaults to one epoch or a tenth of what
remains, whichever is shorter, and is shown with the results.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lrwatch.protocol.commands import MAX_RACE_CANDIDATES, Command, Race, RaceEnd, Stop
from lrwatch.record.rundir import write_race_rows
from lrwatch.record.safefile import WriteError
from lrwatch.run.checkpoints import HostState, tensor_bytes
from lrwatch.schedule.choices import comparison_horizon, comparison_specs, same_as
from lrwatch.schedule.spec import SpecError, parse_spec
from lrwatch.schedule.timeline import Timeline

if TYPE_CHECKING:
    from lrwatch.run.engine import Engine

RAM_FRACTION = 0.25  # the snapshots may take this share of the host's available memory
TRAIN_EMA = 0.9
CURVE_POINTS = 200  # per candidate, in the race event and the live progress (what a chart draws)
DECIDE_POLL_SECONDS = 0.25
PROGRESS_SECONDS = 0.2


def available_ram() -> int:
    """Bytes of host memory available now (``MemAvailable``; else free pages)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def default_horizon(timeline: Timeline, step: int, epochs_known: bool = True) -> int:
    """H = min(one epoch, a tenth of the remaining run); 200 steps when neither is known."""
    remaining = timeline.total_steps - step if timeline.total_steps else None
    epoch = timeline.steps_per_epoch if epochs_known else None
    options = [h for h in (epoch, remaining // 10 if remaining is not None else None) if h is not None]
    return max(1, min(options)) if options else 200


@dataclass
class Candidate:
    """One schedule in the race and what it did."""

    name: str  # "continue", or the schedule's kind
    spec: str  # the spec in force from the fork
    timeline: Timeline
    torch: str  # its PyTorch line
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    val: dict[str, float] = field(default_factory=dict)
    diverged: bool = False
    seconds: float = 0.0
    end: HostState | None = None
    epochs: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # evaluations at epoch ends inside

    @property
    def val_loss(self) -> float:
        return self.val.get("val_loss", math.nan)

    @property
    def train_loss(self) -> float:
        """EMA of its losses (``TRAIN_EMA``); NaN before any."""
        ema = math.nan
        for loss in self.losses:
            if math.isfinite(loss):
                ema = loss if math.isnan(ema) else TRAIN_EMA * ema + (1 - TRAIN_EMA) * loss
        return ema

    def curve(self) -> tuple[list[int], list[float]]:
        """Its losses as ≤ ``CURVE_POINTS`` (step offset, mean loss) pairs, for a chart."""
        n = len(self.losses)
        if n <= CURVE_POINTS:
            return list(range(n)), [float(v) for v in self.losses]
        bins = list(pairwise(np.linspace(0, n, CURVE_POINTS + 1).astype(int).tolist()))
        losses = np.asarray(self.losses)
        return [(a + b - 1) // 2 for a, b in bins], [float(losses[a:b].mean()) for a, b in bins]


def candidates_for(timeline: Timeline, fork: int, specs: Iterable[str]) -> list[Candidate]:
    """Continuing first, then each spec switched in at the fork (none given: the comparison set,
    :func:`~lrwatch.schedule.choices.comparison_specs`). A spec that is the same schedule as continuing or
    an earlier candidate (its LRs over the rest of the run: :func:`~lrwatch.schedule.choices.same_as`) is
    not raced twice."""
    seg = timeline.segment_at(fork)
    out = [Candidate("continue", str(seg.spec), timeline, seg.schedule.torch_line())]
    horizon = comparison_horizon(timeline, fork)
    for text in list(specs) or comparison_specs(timeline, fork):
        spec = parse_spec(text)  # SpecError: one line, nothing changes
        branch = timeline.switch(fork, spec)
        if any(same_as(branch, c.timeline, fork, horizon) for c in out):
            continue
        new = branch.segments[-1]
        out.append(Candidate(spec.kind, str(new.spec), branch, new.schedule.torch_line()))
    if len(out) == 1:
        raise SpecError("nothing to race: every candidate is the schedule in force (continuing)")
    if len(out) > MAX_RACE_CANDIDATES:
        raise SpecError(f"a race takes at most {MAX_RACE_CANDIDATES} candidates (continuing included)")
    return out


def _megabytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def check_budget(model: Any, optimizer: Any, candidates: int, available: int) -> None:
    """Refuse (:class:`SpecError`, with the numbers) when the snapshot and every candidate's end state
    would take more than ``RAM_FRACTION`` of the available host memory."""
    one = tensor_bytes(model.state_dict()) + tensor_bytes(optimizer.state_dict()["state"])
    need, budget = (candidates + 1) * one, RAM_FRACTION * available
    if need > budget:
        raise SpecError(
            f"a race of {candidates} candidates needs {candidates + 1} snapshots × {_megabytes(one)} = "
            f"{_megabytes(need)} of host memory, over the budget ({RAM_FRACTION:.0%} of {_megabytes(available)} "
            "available): race fewer candidates (E C R S), or free memory"
        )


class RaceRun:
    """One race in the training thread: :meth:`run` trains every candidate, logs the results, then keeps
    one or restores the snapshot. Commands that arrive meanwhile: ``RaceEnd`` and ``Stop`` end the race
    (restoring the snapshot first); any other is rejected, with the reason."""

    def __init__(
        self,
        engine: Engine,
        command: Race,
        *,
        model: Any,
        train_step: Callable[[Any], Any],
        batches: Callable[[int], Iterable[Any]],
        evaluate: Callable[[], Any] | None,
        ask: bool,
        keep_index: int | None = None,
    ) -> None:
        """``ask``: a monitor attached at the end decides (``keep="none"``); ``keep_index``: keep that one."""
        self.engine, self.command, self.model, self.ask, self.keep_index = engine, command, model, ask, keep_index
        self.train_step, self.batches, self.evaluate = train_step, batches, evaluate
        self.optimizer = engine.optimizer
        self.fork = engine.step_index
        timeline = engine.timeline
        end = timeline.total_steps
        if end is not None and self.fork >= end:
            raise SpecError("no race: the run is at its planned end")
        if command.steps is not None and command.steps < 1:
            raise SpecError(f"a race needs at least one step (got steps={command.steps})")
        horizon = command.steps or default_horizon(timeline, self.fork, engine.epochs_known)
        self.horizon = min(horizon, end - self.fork) if end is not None else horizon
        self.candidates = candidates_for(timeline, self.fork, command.specs)
        if keep_index is not None and not 0 <= keep_index < len(self.candidates):
            raise SpecError(f"no candidate {keep_index}: this race has {len(self.candidates)} (0 is continuing)")
        check_budget(self.model, self.optimizer, len(self.candidates), available_ram())
        earlier = sum(1 for event in engine.events_since(0) if event.kind == "race_start")
        self.number = max(_next_race_number(engine.run_dir), earlier + 1)
        self.index = 0
        self.phase = "training"
        self.started = time.monotonic()
        self.snapshot: HostState | None = None
        self._progress: dict[str, Any] | None = None
        self._progress_at = 0.0

    # -- what the monitors see ------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """Where the race is (``RunStatus.race``): candidate i of n, its step, the ETA (s; -1: not yet known),
        every curve so far. Recomputed at most every ``PROGRESS_SECONDS`` (monitors and the socket ask often)."""
        now = time.monotonic()
        if self._progress is not None and now - self._progress_at < PROGRESS_SECONDS:
            return self._progress
        done = sum(len(c.losses) for c in self.candidates)
        total = self.horizon * len(self.candidates)
        eta = (now - self.started) / done * (total - done) if done else -1.0
        current = self.candidates[min(self.index, len(self.candidates) - 1)]
        self._progress_at = now
        self._progress = {
            "race": self.number, "fork": self.fork, "horizon": self.horizon, "phase": self.phase,
            "index": self.index, "n": len(self.candidates), "name": current.name, "step": len(current.losses),
            "eta": eta, "names": [c.name for c in self.candidates], "curves": [c.curve() for c in self.candidates],
        }  # fmt: skip
        return self._progress

    # -- the race -----------------------------------------------------------------------------
    def run(self) -> int:
        """The race from start to end; the index of the candidate kept, or -1 (restored)."""
        engine = self.engine
        self.snapshot = HostState.take(self.model, self.optimizer)
        started = engine.record(
            "race_start", race=self.number, horizon=self.horizon, keep=self.command.keep,
            candidates=[c.spec for c in self.candidates], names=[c.name for c in self.candidates],
        )  # fmt: skip
        engine.tell(started)
        engine.race_progress = self.progress
        engine.control.suspended = True  # the race sets the LR step by step; nothing is "outside" here
        try:
            for index, candidate in enumerate(self.candidates):
                self.index = index
                ended = self._train(candidate)
                if ended is not None:
                    return self._end(-1, *ended, cancelled=True)
            self.phase = "deciding"
            self._progress = None
            self._log_results()
            keep, command, on_done = self._decide()
            return self._end(keep, command, on_done)
        except BaseException:
            self.snapshot.load(self.model, self.optimizer)  # a failing candidate leaves the run as it was
            raise
        finally:
            engine.control.suspended = False
            engine.control.set(engine.step_index)  # the LR of the step the run goes on with
            engine.race_progress = None

    def _train(self, candidate: Candidate) -> tuple[Command, Any] | None:
        """Train ``candidate`` for H steps from the snapshot; ``(command, on_done)`` if one ended the race."""
        self.snapshot.load(self.model, self.optimizer)
        groups = self.engine.control.groups_for(candidate.timeline)
        started = time.monotonic()
        end, k = self.fork + self.horizon, candidate.timeline.steps_per_epoch
        # An epoch that ends inside the race is evaluated there, as the loop would have: a kept candidate's
        # run then has that epoch's validation row (the race's own end is the loop's to evaluate).
        epoch_ends = self.engine.epochs_known and self.evaluate is not None
        for step, batch in zip(range(self.fork, end), self.batches(self.fork), strict=False):
            candidate.lrs.append(groups.set(step))
            loss = self.train_step(batch)
            candidate.losses.append(float(loss.detach().item() if hasattr(loss, "detach") else loss))
            if not math.isfinite(candidate.losses[-1]):
                candidate.diverged = True
                break
            if epoch_ends and (step + 1) % k == 0 and step + 1 < end:
                candidate.epochs.append((step + 1, _metrics(self.evaluate())))
            ended = self._poll(wait=0.0)
            if ended is not None:
                return ended
        candidate.seconds = time.monotonic() - started
        candidate.val = _metrics(self.evaluate()) if self.evaluate is not None and not candidate.diverged else {}
        candidate.end = HostState.take(self.model, self.optimizer)
        if self.engine.run_dir is not None:
            k = candidate.timeline.steps_per_epoch
            rows = [(self.fork + i, (self.fork + i) / k if self.engine.epochs_known else math.nan, lr, loss)
                    for i, (lr, loss) in enumerate(zip(candidate.lrs, candidate.losses, strict=True))]  # fmt: skip
            try:
                write_race_rows(self.engine.run_dir, self.number, f"{self.index}-{candidate.name}", rows)
            except WriteError as exc:
                self.engine.warn(f"race rows not written ({exc}); the race goes on")
        return None

    def _poll(self, wait: float) -> tuple[Command, Any] | None:
        """The next ``RaceEnd``/``Stop`` for this race, if one came (others are answered by the engine)."""
        got = self.engine.race_command(wait)
        if got is None:
            return None
        command, on_done = got
        if isinstance(command, RaceEnd) and self.phase == "training" and command.keep >= 0:
            self.engine.reject(command, on_done, "the candidates are still training: escape cancels the race")
            return None
        if isinstance(command, RaceEnd) and command.keep >= len(self.candidates):
            self.engine.reject(command, on_done, f"no candidate {command.keep}: this race has {len(self.candidates)}")
            return None
        return command, on_done

    def best(self) -> int:
        """The lowest ``val_loss`` (without evaluation: the lowest train loss); -1 if none is finite."""
        scores = [c.val_loss if self.evaluate is not None else c.train_loss for c in self.candidates]
        finite = [(s, i) for i, s in enumerate(scores) if math.isfinite(s) and not self.candidates[i].diverged]
        return min(finite)[1] if finite else -1

    def _log_results(self) -> None:
        """The ``race`` event: every candidate's result, before anything is kept or discarded."""
        base = self.candidates[0].val_loss
        rows = []
        for c in self.candidates:
            x, y = c.curve()
            rows.append({
                "name": c.name, "spec": c.spec, "torch": c.torch, "train_loss": c.train_loss,
                "val_loss": c.val_loss, "delta_val": c.val_loss - base, "val": c.val, "diverged": c.diverged,
                "steps": len(c.losses), "seconds": c.seconds, "curve_x": x, "curve": y,
            })  # fmt: skip
        awaiting = self.ask and self.command.keep == "none" and self.engine.monitors > 0
        self.engine.record(
            "race", race=self.number, fork=self.fork, horizon=self.horizon, keep=self.command.keep,
            evaluated=self.evaluate is not None, best=self.best(), awaiting=awaiting, candidates=rows,
        )  # fmt: skip

    def _decide(self) -> tuple[int, Command | None, Any]:
        """``best``: the winner. ``none``: a monitor's choice while one is attached (asked), else -1."""
        if self.keep_index is not None:
            return self.keep_index, None, None
        if self.command.keep == "best":
            return self.best(), None, None
        while self.ask and self.engine.monitors > 0:
            got = self._poll(wait=DECIDE_POLL_SECONDS)
            if got is not None:
                command, on_done = got
                return (command.keep if isinstance(command, RaceEnd) else -1), command, on_done
        return -1, None, None

    def _end(self, keep: int, command: Command | None, on_done: Any, *, cancelled: bool = False) -> int:
        """Keep candidate ``keep`` or restore the snapshot; log ``race_end``; then a ``Stop`` stops the run."""
        engine = self.engine
        if keep >= 0:
            kept = self.candidates[keep]
            kept.end.load(self.model, self.optimizer)
            rows = list(zip(kept.lrs, kept.losses, strict=True))
            engine.keep_branch(kept.timeline if keep else None, rows, kept.epochs, requested=kept.spec, reason="race")
        else:
            self.snapshot.load(self.model, self.optimizer)
        why = "stop" if isinstance(command, Stop) else "cancelled" if cancelled else "kept" if keep >= 0 else "restored"
        event = engine.record(
            "race_end", race=self.number, kept=keep, name=self.candidates[keep].name if keep >= 0 else None,
            spec=self.candidates[keep].spec if keep >= 0 else None, outcome=why, fork=self.fork,
        )  # fmt: skip
        if isinstance(command, Stop):
            engine.apply(command, on_done)
        elif on_done is not None:
            on_done(event)
        return keep


def _metrics(value: Any) -> dict[str, float]:
    """``evaluate()``'s answer as metrics: a float is the ``val_loss``, a dict names them, a tuple starts with it."""
    if isinstance(value, dict):
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        value = value[0]
    return {"val_loss": float(value.item() if hasattr(value, "item") else value)}


def _next_race_number(run_dir: Path | None) -> int:
    """1 + the races already in ``RUN_DIR/races`` (a resumed run keeps counting)."""
    races = run_dir / "races" if run_dir is not None else None
    if races is None or not races.is_dir():
        return 1
    numbers = [int(p.name) for p in races.iterdir() if p.name.isdigit()]
    return max(numbers, default=0) + 1
