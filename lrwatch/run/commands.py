"""What waits for the next step boundary: commands submitted from any thread, and commands scripted
for a step (``--switch EPOCH:SPEC``, a checkpoint's pending switches). No Textual, no torch.

The engine takes them at a step boundary (:mod:`lrwatch.run.engine`); whoever submitted a command may ask
to be told the event it led to (``on_done``, called once, in the training thread).
"""

from __future__ import annotations

import contextlib
import queue
from collections.abc import Callable

from lrwatch.protocol.commands import Command
from lrwatch.protocol.events import Event

Done = Callable[[Event], None]  # told the event a submitted command led to (applied, or rejected)
Pending = tuple[Command, Done | None]


_NONE: list = []  # shared, never appended to: due() with nothing scripted allocates nothing


class CommandQueue:
    """Submitted commands (thread-safe, in order) and scripted ones (by step)."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        self._submitted: queue.SimpleQueue[Pending] = queue.SimpleQueue()
        self._scripted: dict[int, list[Command]] = {}
        self._on_change = on_change  # told after any command is added (the engine's fast step then stops)

    # -- submitted: any thread puts, the training thread takes ---------------------------------
    def submit(self, command: Command, on_done: Done | None = None) -> None:
        self._submitted.put((command, on_done))
        self._on_change()

    def waiting(self) -> bool:
        """A submitted command waits to be taken."""
        return not self._submitted.empty()

    def take(self, wait: float = 0.0) -> Pending | None:
        """The oldest submitted command, waiting up to ``wait`` seconds for one; ``None`` if none came."""
        if not wait and self._submitted.empty():
            return None  # the common case, every step: no exception raised and caught
        try:
            return self._submitted.get(timeout=wait) if wait else self._submitted.get_nowait()
        except queue.Empty:
            return None

    def take_all(self, wait: float = 0.0) -> list[Pending]:
        """Every submitted command, in order; with ``wait``, waiting that long for a first one."""
        taken: list[Pending] = []
        if wait and self._submitted.empty():
            with contextlib.suppress(queue.Empty):
                taken.append(self._submitted.get(timeout=wait))
        while not self._submitted.empty():
            taken.append(self._submitted.get_nowait())
        return taken

    # -- scripted: by step --------------------------------------------------------------------
    def schedule(self, step: int, command: Command) -> None:
        self._scripted.setdefault(int(step), []).append(command)
        self._on_change()

    def next_scripted(self, step: int) -> int | None:
        """The first step at or after ``step`` that has scripted commands (``None``: none)."""
        return min((s for s in self._scripted if s >= step), default=None)

    def due(self, step: int) -> list[Command]:
        """The commands scripted for ``step``, taken off the script."""
        return self._scripted.pop(step, _NONE) if self._scripted else _NONE

    def scheduled(self) -> list[tuple[int, Command]]:
        """The commands still waiting for their step, in step order (a checkpoint keeps them)."""
        return [(step, command) for step, commands in sorted(self._scripted.items()) for command in commands]

    def replace_scheduled(self, scheduled: list[tuple[int, Command]]) -> None:
        """A resumed run's script: these, instead of any given so far."""
        self._scripted = {}
        for step, command in scheduled:
            self.schedule(step, command)

    def postpone(self, start: int, end: int) -> None:
        """Commands scripted for steps ``start < s < end`` (steps lrwatch trained itself, a kept race)
        move to ``end``, in their order."""
        moved = [c for step in sorted(s for s in self._scripted if start < s < end) for c in self._scripted.pop(step)]
        if moved:
            self._scripted[end] = moved + self._scripted.get(end, [])  # earlier steps' first
            self._on_change()
