"""What a race (:mod:`lrwatch.run.race`) asks of the engine while it runs inside one command, in the training
thread: tell the sender it started, take only its own ends, reject anything else, keep a candidate's branch."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from lrwatch.protocol.commands import Command, RaceEnd, Stop
from lrwatch.protocol.events import Event
from lrwatch.run.commands import Done
from lrwatch.schedule.timeline import Timeline


class RaceHooks:
    """Mixed into :class:`~lrwatch.run.engine.Engine`, whose attributes it reads."""

    step_index: int
    steps_taken: int
    commands: Any
    _tell: Done

    def tell(self, event: Event) -> None:
        """The command being applied has led to ``event`` (its sender may stop waiting)."""
        self._tell(event)

    def apply(self, command: Command, on_done: Done | None = None) -> None:
        """Apply ``command`` now, at this boundary (a DDP sync step's agreed commands; a ``Stop`` that ended a race)."""
        self._apply(command, on_done)

    def reject(self, command: Command, on_done: Done | None, reason: str) -> None:
        event = self.emit("rejected", command=command.to_dict(), reason=reason)
        if on_done is not None:
            on_done(event)

    def race_command(self, wait: float = 0.0) -> tuple[Command, Done | None] | None:
        """While a race runs: the next ``RaceEnd`` or ``Stop`` that came (waiting up to ``wait`` s);
        any other command is rejected, as it would change the run under the race."""
        while (pending := self.commands.take(wait)) is not None:
            command, on_done = pending
            if isinstance(command, (RaceEnd, Stop)):
                return command, on_done
            self.reject(command, on_done, "a race is running: escape (or lrwatch send RUN_DIR race-end) ends it")
        return None

    def keep_branch(
        self,
        timeline: Timeline | None,
        rows: list[tuple[float, float]],
        epochs: Iterable[tuple[int, dict[str, float]]] = (),
        **why: Any,
    ) -> None:
        """A race's kept candidate: from the fork (this step) on, ``timeline`` (None: unchanged, a logged
        switch otherwise), and its ``(lr, loss)`` rows become the run's next steps, with the validation rows
        of the epochs that ended among them (``(steps done, metrics)``). Switches scripted inside them land
        at the step after (visibly, as one given for the past)."""
        fork = self.step_index
        if timeline is not None:
            self.set_timeline(timeline)
            self.emit_switch(**why)
        ends = dict(epochs)
        for i, (lr, loss) in enumerate(rows):
            self._record(fork + i, lr, loss, watch_loss=False)
            if fork + i + 1 in ends:
                self.step_index = fork + i + 1
                self.end_epoch(**ends[fork + i + 1])
        self.step_index = end = fork + len(rows)
        self.steps_taken += len(rows)
        self.commands.postpone(fork, end)
