"""Keys pressed before the run answers: kept, in order, and applied once it does.

A run takes seconds to answer (the run process imports torch and builds its data; a script trains only
at its first ``optimizer.step()``), while the monitor draws within a second, the schedule ahead
included (a demo's is computed without torch). A run key pressed in that window (a switch, a
candidate, pause, checkpoint, the range test, the race) waits in :class:`EarlyKeys`' queue, shown in
the run panel, and runs as if pressed then once the run's first snapshot is here. The view keys need
no run, and ``q``/Ctrl+C cancel a run that has not answered (:meth:`RemoteRunSource.cancel`).

A mixin of :class:`~lrwatch.app.monitor.LRWatchApp`: Textual's public :meth:`App.run_action`, through
which every binding runs, is where a run action is held back.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.actions import parse

from lrwatch.app.runkeys import SCHEDULE_ACTIONS

WAITING_ACTIONS = SCHEDULE_ACTIONS | {"pause", "checkpoint", "clear_candidates"}
MAX_WAITING = 64  # a key held down before the run answers: the first 64 wait, the rest are dropped (and said)


def action_label(action: str) -> str:
    """``"switch('exp')"`` → ``"switch exp"``: how a waiting key is listed in the run panel."""
    _, name, params = parse(action)
    return " ".join([name.replace("_", " "), *(str(p) for p in params)])


class EarlyKeys:
    """Holds run actions back until the run can take them, then runs them in the order pressed."""

    # provided by the app
    source: Any
    connected: bool
    notify: Any
    call_later: Any
    _waiting_keys: list[str] | None = None

    @property
    def waiting_keys(self) -> list[str]:
        if self._waiting_keys is None:
            self._waiting_keys = []
        return self._waiting_keys

    def run_waits(self) -> bool:
        """Run keys wait: the run has not answered yet (or is starting: no timeline to act on)."""
        if not self.connected or self.source is None:
            return True
        status = self.source.status()
        return status.state == "starting" and not status.read_only

    async def run_action(self, action: Any, default_namespace: Any = None, namespaces: Any = None) -> bool:
        """Textual's ``App.run_action``; a run action on the app while the run has not answered waits."""
        if isinstance(action, str) and default_namespace in (None, self) and self.run_waits():
            _, name, _ = parse(action)
            if name in WAITING_ACTIONS:
                self.hold(action)
                return True
        return await super().run_action(action, default_namespace, namespaces)  # type: ignore[misc]

    def hold(self, action: str) -> None:
        if len(self.waiting_keys) >= MAX_WAITING:
            self.notify(f"{MAX_WAITING} keys wait for the run already: this one is dropped.", severity="warning")
            return
        self.waiting_keys.append(action)
        self.waiting_changed()

    def waiting_changed(self) -> None:
        """Hook: the queue changed (the app redraws the run panel's line)."""

    def waiting_text(self) -> Text | None:
        """The run panel's line about the keys waiting, or None when none wait."""
        if not self.waiting_keys:
            return None
        keys = " · ".join(action_label(action) for action in self.waiting_keys[-6:])
        more = "… · " if len(self.waiting_keys) > 6 else ""
        n = len(self.waiting_keys)
        return Text(f"{n} key{'s' if n > 1 else ''} waiting for the run: {more}{keys}", style="bold yellow")

    def release_waiting(self) -> None:
        """The run answered: run the keys held back, in the order they were pressed."""
        if not self.waiting_keys or self.run_waits():
            return
        waiting, self._waiting_keys = self.waiting_keys, []
        for action in waiting:
            self.call_later(self.run_action, action)
