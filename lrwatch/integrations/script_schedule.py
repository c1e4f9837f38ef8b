"""The script's own schedule, shown as it is until lrwatch takes the LR over (``lrwatch run``, zero lines).

At the script's first optimizer step its schedulers are found on the optimizer
(:func:`~lrwatch.integrations.takeover.schedulers_of`) and the run's first segment becomes theirs
(:class:`~lrwatch.schedule.script.ScriptSchedule`):

- one scheduler lrwatch knows (:func:`~lrwatch.integrations.schedulers.spec_of_scheduler`): its equal spec, on
  the scheduler's clock (origin at its step 0), exact to its LRs, previewed ahead;
- another (a ``LambdaLR`` of the script's own, ``CyclicLR``, several schedulers): observed, by stepping a deep
  copy of it on a copy of the optimizer's param groups (never the real optimizer, nor its parameters) for up to
  :data:`~lrwatch.schedule.script.MAX_AHEAD` steps, refreshed as the run uses them up;
- none: ``set by the script`` (``param_group["lr"] = get_lr(it)``, as nanoGPT), with nothing ahead.

How often the script steps its scheduler is learnt from the scheduler's own ``last_epoch``: after each batch
(seen at the second optimizer step), or once per epoch (``len(DataLoader)`` steps), or every N steps. Until it
is seen, a per-batch guess (no epochs known) or nothing ahead. A scheduler whose LR then differs from the spec
(a ``ReduceLROnPlateau``'s reduction, a script that also sets the LR) is shown again from the LR in force.
Each change is a ``schedule`` event with the new timeline, and ``run.json`` is rewritten to say the same.
"""

from __future__ import annotations

import copy
import math
import types
import warnings
from typing import Any

import numpy as np

from lrwatch.integrations.schedulers import spec_of_scheduler
from lrwatch.integrations.takeover import scheduler_names, schedulers_of
from lrwatch.record.rundir import run_info
from lrwatch.schedule.script import MAX_AHEAD, ScriptSchedule
from lrwatch.schedule.spec import SpecError
from lrwatch.schedule.timeline import Timeline

REFRESH_GAP = 64  # observed: at most one refresh for a mismatch in this many steps
BLOCK = 1024  # the segment's LRs computed at once, for the per-step comparison
MISMATCHES = 3  # observed LRs that kept differing from the scheduler's: it is the script's, by hand


def outer_schedulers(optimizer: Any) -> list[Any]:
    """The schedulers the script steps itself: not those a ``SequentialLR`` (or ``ChainedScheduler``) chains."""
    found = schedulers_of(optimizer)
    inner = {id(s) for outer in found for s in getattr(outer, "_schedulers", ())}
    return [s for s in found if id(s) not in inner]


def _light_optimizer(optimizer: Any) -> Any:
    """A stand-in with copies of ``optimizer``'s param groups (no parameters): what a copied scheduler steps."""

    def step() -> None:
        """Never called: a copied scheduler only checks that it exists."""

    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]  # PyTorch's "stepped before optimizer" check
    groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} | {"params": []}
              for g in optimizer.param_groups]  # fmt: skip
    return types.SimpleNamespace(param_groups=groups, defaults=dict(optimizer.defaults), step=step, _opt_called=True)


def observe(schedulers: list[Any], optimizer: Any, *, start: int, origin: int, every: int, n: int) -> list[float]:
    """Group 0's LR of steps ``start .. start + n − 1`` by stepping deep copies of ``schedulers`` (which step
    before the steps ``origin + k·every``) on a stand-in optimizer; ``[]`` if they cannot be copied or stepped."""
    stand_in = _light_optimizer(optimizer)
    memo: dict[int, Any] = {id(optimizer): stand_in, id(optimizer.param_groups): stand_in.param_groups}
    for group in optimizer.param_groups:  # a scheduler that holds the model shares its parameters, uncopied
        for param in group["params"]:
            memo[id(param)] = param
    try:
        copies = copy.deepcopy(schedulers, memo)
        values = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for s in range(start, start + n):
                if s > start and (s - origin) % max(every, 1) == 0:
                    for scheduler in copies:
                        scheduler.step()
                values.append(float(stand_in.param_groups[0]["lr"]))
    except Exception:  # a scheduler that does not copy or step alone (one that needs a metric): no preview
        return []
    return values


class ScriptSchedules:
    """Shows the script's own schedule on ``engine``'s timeline, and follows it at each step boundary
    (:meth:`check`, from the optimizer step pre-hook) until lrwatch takes the LR over."""

    def __init__(self, optimizer: Any, *, steps_per_epoch: int | None) -> None:
        self.optimizer = optimizer
        self.epoch = steps_per_epoch  # None: no epochs known
        self.schedulers = outer_schedulers(optimizer)
        self.main = self.schedulers[0] if self.schedulers else None
        self.clock0: tuple[int, int] | None = None  # (run step, scheduler step) when first seen
        self.every = 0
        self.origin = 0
        self.refreshed = -REFRESH_GAP
        self.mismatches = 0
        self.seen: int | None = None  # the scheduler's step at the last check
        self.observed = False  # its spec did not give its LRs: observed from then on
        self._block: tuple[Timeline, int, list[float]] | None = None  # the segment's LRs from a step on
        self.done = False

    def _scheduler_step(self) -> int | None:
        last = getattr(self.main, "last_epoch", None)
        return int(last) if isinstance(last, (int, float)) and math.isfinite(last) else None

    def follow(self, engine: Any, first: bool = False) -> None:
        """:meth:`first`, or :meth:`check`; whatever goes wrong here is a warning, never the script's error."""
        try:
            if first:
                self.first(engine)
            else:
                self.check(engine)
        except Exception as exc:  # a scheduler of any kind: the script must go on
            self.done = True
            engine.warn(f"the script's own schedule is no longer followed ({type(exc).__name__}: {exc})")

    # -- at the first step --------------------------------------------------------------------------
    def first(self, engine: Any) -> None:
        """Before the start is logged: the script's schedule becomes the timeline's first segment."""
        timeline = engine.timeline
        if len(timeline.segments) > 1 or engine.control.took_over or engine.control.hand_over_at is not None:
            self.done = True  # a resumed run that lrwatch already drives
            return
        step = engine.step_index
        known = self._scheduler_step()
        self.clock0 = (step, known) if known is not None else None
        self.seen = known
        self.every = 1 if not self.epoch else 0  # no epochs: a per-batch guess; else seen at the next step
        self.origin = step - (known or 0) * max(self.every, 1)
        engine.set_timeline(self._timeline(engine))

    def _timeline(self, engine: Any) -> Timeline:
        """The timeline whose first segment is the script's schedule as now known."""
        timeline = engine.timeline
        lr = float(self.optimizer.param_groups[0]["lr"])
        made = _same_run(timeline)
        if self.main is None:
            return Timeline.of_script(ScriptSchedule("by-hand", "param_group['lr']"), None, lr=lr, **made)
        source = scheduler_names(self.schedulers)
        spec = self._spec() if len(self.schedulers) == 1 and not self.observed else None
        if spec is not None:
            script = ScriptSchedule("mapped", source, self.every)
            origin = engine.step_index if spec.startswith("plateau") else self.origin  # flat from the LR in force
            base = lr if spec.startswith("plateau") else None
            try:
                return Timeline.of_script(script, spec, lr=base or 0.0, origin_step=origin, **made)
            except SpecError:
                pass
        script = ScriptSchedule("observed", source, self.every)
        if self.every:
            step = engine.step_index
            ahead = min(MAX_AHEAD, (timeline.total_steps or step + MAX_AHEAD) - step)
            values = observe(self.schedulers, self.optimizer, start=step, origin=self.origin, every=self.every,
                             n=max(ahead, 1))  # fmt: skip
            script = script.with_values(values, step)
            self.refreshed = step
        return Timeline.of_script(script, None, lr=lr, **made)

    def _spec(self) -> str | None:
        """The mapped spec at the cadence seen: per batch (times in steps), per epoch (in epochs); else None."""
        if self.every == 1 or self.every == 0:
            return spec_of_scheduler(self.main, interval="step")
        if self.epoch and self.every == self.epoch:
            return spec_of_scheduler(self.main, interval="epoch")
        return None

    # -- at each step boundary ----------------------------------------------------------------------
    def check(self, engine: Any) -> None:
        """Before optimizer step ``engine.step_index``: learn the cadence, notice a schedule that went another
        way, refresh observed LRs used up. Cheap when the scheduler did not step (two attribute reads)."""
        if self.done or self.main is None:
            return
        script = engine.timeline.script
        if engine.control.took_over or script is None:
            self.done = True
            return
        step, now = engine.step_index, self._scheduler_step()
        stepped, self.seen = now != self.seen, now
        changed = self._learn_cadence(step, now)
        if changed or not self.every:
            pass
        elif script.how == "observed" and script.values:
            total = engine.timeline.total_steps or math.inf
            if step - script.values_from >= len(script.values) * 3 // 4 and total > (script.horizon or 0):
                changed = True  # most of the observed LRs are behind: find the next ones
            elif stepped and step - self.refreshed >= REFRESH_GAP and self._differs(engine, step):
                self.mismatches += 1
                changed = True
        elif script.how == "mapped" and stepped and self._differs(engine, step):
            changed = True  # a plateau's reduction: flat from the LR in force; else the script sets it too
            self.observed = not str(engine.timeline.segments[0].spec).startswith("plateau")
        if changed:
            show(engine, self._timeline(engine) if self.mismatches < MISMATCHES else self._by_hand(engine))

    def _learn_cadence(self, step: int, now: int | None) -> bool:
        """The scheduler's steps so far say how often the script steps it: ``True`` when that changed."""
        if self.clock0 is None or now is None:
            return False
        step0, at0 = self.clock0
        if now > at0 and self.every != (step - step0) // (now - at0):
            every = (step - step0) // (now - at0)
            if every < 1 or (step - step0) % (now - at0):
                return False
            self.every, self.origin = every, step - now * every
            self.clock0 = (step, now)
            return True
        if now > at0:
            self.clock0 = (step, now)
        elif self.every == 0 and step == step0 + 1 and self.epoch and self.epoch > 1:
            self.every, self.origin = self.epoch, step0 - at0 * self.epoch  # not after a batch: per epoch, likely
            return True
        elif self.every and step - step0 > self.every:
            self.every = 0  # not stepped when due: not seen stepping (yet)
            return True
        return False

    def _differs(self, engine: Any, step: int) -> bool:
        """The LR this step is about to use is not the one the script's segment gives for it."""
        lr = self.optimizer.param_groups[0]["lr"]
        lr = float(lr.item() if hasattr(lr, "item") else lr)
        return not math.isclose(lr, self._expected(engine.timeline, step), rel_tol=1e-9, abs_tol=1e-15)

    def _expected(self, timeline: Timeline, step: int) -> float:
        """The segment's LR at ``step``: an observed value, or from a block of the timeline's LRs (kept, so that
        a step costs an index, as :class:`~lrwatch.run.groups.GroupLrs` does)."""
        script = timeline.script
        if script is not None and script.how == "observed" and script.values:
            return script.values[min(max(step - script.values_from, 0), len(script.values) - 1)]
        block = self._block
        if block is None or block[0] is not timeline or not 0 <= step - block[1] < BLOCK:
            block = self._block = (timeline, step, timeline.lrs(np.arange(step, step + BLOCK)).tolist())
        return block[2][step - block[1]]

    def _by_hand(self, engine: Any) -> Timeline:
        """The scheduler's LRs kept differing from what a copy of it gives: the script sets the LR itself."""
        self.done = True
        lr = float(self.optimizer.param_groups[0]["lr"])
        script = ScriptSchedule("by-hand", scheduler_names(self.schedulers))
        return Timeline.of_script(script, None, lr=lr, **_same_run(engine.timeline))


def _same_run(timeline: Timeline) -> dict[str, Any]:
    """What a new script timeline keeps of the run's: its clock, length, unit and initial LR (which each param
    group's LR is relative to)."""
    return {"steps_per_epoch": timeline.steps_per_epoch, "total_steps": timeline.total_steps,
            "steps_only": timeline.steps_only, "initial_lr": timeline.initial_lr}  # fmt: skip


def show(engine: Any, timeline: Timeline) -> None:
    """``timeline`` (the script's schedule, better known now) becomes the run's: a ``schedule`` event (``again``
    when its label is the same: no line is printed for it), and ``run.json`` says the same."""
    before = engine.timeline
    label = timeline.label_of(timeline.segments[0])
    again = before.script is not None and before.label_of(before.segments[0]) == label  # LRs ahead refreshed
    engine.set_timeline(timeline)
    engine.emit("schedule", timeline=timeline.to_dict(), schedule=label, **({"again": True} if again else {}))
    if engine.run_dir is not None and not engine.start_step:
        engine.log.write_run_info(run_info(engine.config, timeline.to_dict(), engine.started_at))
