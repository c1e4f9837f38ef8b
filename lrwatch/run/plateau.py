"""``plateau``, live: PyTorch's ``ReduceLROnPlateau`` fed by the loop's evaluations.

``monitor.epoch_end(val_loss=...)`` (and the frameworks' evaluations) hands each evaluation's metrics to
:meth:`PlateauWatch.observe`. While a ``plateau`` segment is in force (after its warmup), its metric goes to
a :class:`~lrwatch.schedule.plateau.PlateauState` (best, bad evaluations, cooldown: ``ReduceLROnPlateau.step``'s
bookkeeping); a reduction is an edit of the segment (``reduced=n+1``), so the timeline, the preview (flat at
the level in force) and ``lrwatch view``'s replay all hold it, logged as a ``plateau`` event.
"""

from __future__ import annotations

from typing import Any

from lrwatch.schedule.plateau import PlateauState


class PlateauWatch:
    """The evaluations of a run whose schedule is ``plateau``; one per engine."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.state: PlateauState | None = None
        self.origin: int | None = None  # the plateau segment the state belongs to
        self._warned_for: int | None = None

    def observe(self, metrics: dict[str, float]) -> None:
        engine = self.engine
        step = engine.step_index
        seg = engine.timeline.segment_at(step)
        if seg.schedule.kind != "plateau" or not engine.drive_lr:
            self.state = self.origin = None
            return
        values = seg.schedule.params()
        if step - seg.origin_step < values["warmup"].to_steps(engine.timeline.steps_per_epoch):
            return  # the warmup first, as SequentialLR would run it before the plateau scheduler
        if self.state is None or self.origin != seg.origin_step:
            self.state, self.origin = PlateauState.of(values), seg.origin_step
        name = values["metric"]
        if name not in metrics:
            if self._warned_for != seg.origin_step:
                self._warned_for = seg.origin_step
                engine.warn(f"plateau follows {name}, which this evaluation did not give: "
                            f"monitor.epoch_end({name}=...)")  # fmt: skip
            return
        if not self.state.observe(metrics[name]):
            return
        before = engine.lr
        reduced = int(values["reduced"]) + 1
        engine.set_timeline(engine.timeline.edit(step, reduced=reduced))
        engine.reset_lr()
        seg = engine.timeline.segments[-1]
        engine.emit(
            "plateau", metric=name, value=float(metrics[name]), best=self.state.best, lr_before=before, lr=engine.lr,
            params={"reduced": reduced}, spec=str(seg.spec), torch=seg.schedule.torch_line(),
        )  # fmt: skip

    def state_dict(self) -> dict[str, Any] | None:
        if self.state is None:
            return None
        return {"origin": self.origin, **self.state.to_dict()}

    def load_state_dict(self, data: dict[str, Any] | None) -> None:
        """The bookkeeping of a saved run (its plateau segment's origin must match, else it starts afresh)."""
        if not data:
            return
        seg = self.engine.timeline.segment_at(self.engine.step_index)
        if seg.schedule.kind == "plateau" and seg.origin_step == data.get("origin"):
            self.state, self.origin = PlateauState.of(seg.schedule.params()), seg.origin_step
            self.state.load(data)
