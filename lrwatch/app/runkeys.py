"""The run keys of the monitor (pause, checkpoint, help, detach, quit, the divergence alert's choice) and
which keys a run offers at all.

A mixin of :class:`~lrwatch.app.monitor.LRWatchApp`. :meth:`RunKeys.check_action` hides what does not
work on this run from the footer and the key map: a read-only view (``lrwatch view``, an ended run's
attach) keeps only the view keys, ``?`` and ``q``; a monitor-only run has no schedule keys; a run trained
in this process cannot be detached from. A hidden key pressed anyway says why, once, instead of nothing.
"""

from __future__ import annotations

from typing import Any

from textual import events

from lrwatch.app.help import HelpScreen
from lrwatch.app.screens import ConfirmStop
from lrwatch.protocol.commands import MONITOR_ONLY, Checkpoint, Pause, Resume, Rollback, Stop
from lrwatch.protocol.events import LIVE_STATES

QUIT_WAIT_SECONDS = 10.0
SCHEDULE_ACTIONS = frozenset({
    "switch", "candidate", "candidate_all", "apply_candidate", "mark", "pick", "edit_spec", "nudge", "toggle_anchor",
    "find_lr", "race",
})  # fmt: skip
RUN_ACTIONS = frozenset({"pause", "checkpoint", "detach", "clear_candidates"})
READ_ONLY_NOTE = "A read-only view: only the view keys work here (l L w x [ ]); ? lists them, q closes."


class RunKeys:
    """Pause, checkpoint, help, detach, quit; the divergence alert's choice; which keys this run offers."""

    # provided by the app
    source: Any
    link: Any
    owner: bool
    detached: bool
    _quitting: bool
    clock: Any
    notify: Any
    push_screen: Any
    screen: Any
    exit: Any
    set_timer: Any
    refresh_bindings: Any
    monitor_screen: Any
    connected: bool
    _offered: tuple[bool, bool, bool] | None = None
    _told_read_only = False

    # -- which keys this run offers -------------------------------------------------------------
    def offered(self) -> tuple[bool, bool, bool]:
        """``(commands, schedule, detach)``: commands reach the run (not a read-only view); schedule keys
        make sense (lrwatch sets the LR, or takes it over at a switch); ``d`` can leave it training."""
        status = self.source.status() if self.source is not None else None
        commands = status is None or not status.read_only
        schedule = commands and (status is None or status.drives_lr or status.takes_over)
        return commands, schedule, getattr(self.source, "detach", None) is not None

    def update_offered(self) -> None:
        """Refresh the footer when what this run offers changed (it connected, ended, became a view)."""
        offered = self.offered()
        if offered != self._offered:
            self._offered = offered
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        commands, schedule, detach = self._offered or (True, True, True)
        if action in SCHEDULE_ACTIONS:
            return schedule
        if action in RUN_ACTIONS:
            return commands and (detach if action == "detach" else True)
        return True

    def on_key(self, event: events.Key) -> None:
        """A key this run does not offer (hidden from the footer): say why, once, rather than nothing."""
        commands = (self._offered or (True, True, True))[0]
        if not commands and not self._told_read_only and event.character and event.character.isprintable():
            if event.character not in "lLwxm[]?q":
                self._told_read_only = True
                self.notify(READ_ONLY_NOTE, severity="warning", timeout=6)

    # -- the keys ---------------------------------------------------------------------------------
    def action_checkpoint(self) -> None:
        if self.source is not None and not self.source.status().read_only:
            self.source.submit(Checkpoint())

    def action_pause(self) -> None:
        if self.source is None or self.source.status().read_only:
            return
        state = self.source.status().state
        self.source.submit(Resume() if state == "paused" else Pause())

    def action_help(self) -> None:
        commands, schedule, _ = self._offered or self.offered()
        self.push_screen(HelpScreen(read_only=not commands, axis=self.monitor_screen.axis_name))
        if commands and not schedule:
            self.notify(MONITOR_ONLY, severity="warning", timeout=6)

    def action_detach(self) -> None:
        """Leave the run training and give the shell back (the run is a process of its own)."""
        detach = getattr(self.source, "detach", None)
        if detach is None:
            self.notify("This run trains inside this process: q stops it.", severity="warning")
            return
        detach()
        self.detached = True
        self.exit(return_code=0)

    def _after_divergence(self, choice: str | None) -> None:
        if self.source is None or choice is None:
            return
        if choice == "rollback":
            self.source.submit(Rollback())
            self.source.submit(Resume())
        elif choice == "resume":
            self.source.submit(Resume())
        elif choice == "stop":
            self.source.submit(Stop("divergence"))

    def _run_live(self) -> bool:
        if self.source is None:
            return self.link.training
        return self.source.status().state in (*LIVE_STATES, "stopping")

    def action_quit_run(self) -> None:
        """Owner: stop the run at a step boundary, wait for it to flush, exit. Attached: ask first."""
        if self._quitting or isinstance(self.screen, ConfirmStop):
            return
        if not self.connected and self.source is not None:  # the run has not answered: nothing to ask about
            cancel = getattr(self.source, "cancel", None)
            if self.owner and cancel is not None and cancel():  # started for us: ended before it trains
                self.exit(return_code=0)
                return
            if not self.owner:
                self.exit(return_code=0)
                return
        if self.source is not None and self.source.status().read_only:  # a view: nothing to stop
            self.exit(return_code=0)
            return
        if not self.owner and self.source is not None and self._run_live():
            self.push_screen(ConfirmStop(), self._after_confirm)
            return
        self._stop_and_exit()

    def _after_confirm(self, stop: bool | None) -> None:
        if stop:
            self._stop_and_exit()

    def _stop_and_exit(self) -> None:
        self._quitting = True
        if self.source is not None and self.source.status().live:
            self.source.submit(Stop("quit"))
        deadline = self.clock() + QUIT_WAIT_SECONDS
        closed = getattr(self.source, "closed", None)

        def check() -> None:
            if self.link.thread is not None:
                alive = self.link.training
            else:
                alive = closed is not None and not closed.is_set()
            if alive and self.clock() < deadline:
                self.set_timer(0.05, check)
                return
            self.exit(return_code=1 if self.link.failed else 0)

        check()
