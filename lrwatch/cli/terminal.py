"""The monitor in this terminal, as a client of its run process, and the watch on that terminal.

The terminal's process only draws: when its terminal goes away (SIGHUP, or the tty answering EIO
with no signal at all, as under some sshd and tmux paths) :class:`TerminalWatch` ends it at once with
``os._exit`` from a thread of its own, so no write blocked on a dead pty (Textual's writer thread
dies on EIO and its bounded queue then blocks the main thread) can ever hold it. Training is in
the other process (:mod:`lrwatch.live.launch`) and notices only a client gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import termios
import threading
import time
from collections.abc import Callable
from typing import Any

from lrwatch.live.client import RemoteRunSource

TERMINAL_POLL_SECONDS = 0.5
SIGTERM_GRACE_SECONDS = 4.0
GRACEFUL_EXIT_SECONDS = 3.0


class TerminalWatch:
    """Ends this process when its terminal is gone: SIGHUP, or ``tcgetattr`` failing on the tty.

    A tty that no longer answers gets ``os._exit`` at once, from this watcher's own thread: nothing
    else in the process (a blocked write, a busy input thread) can hold it. A SIGHUP while the tty
    still answers (someone sent the signal) gets ``graceful`` (the app exits and restores the
    terminal) and ``os._exit`` only if that has not finished within :data:`GRACEFUL_EXIT_SECONDS`.
    """

    def __init__(self, graceful: Callable[[], None] | None = None, status: int = 0) -> None:
        self.graceful = graceful
        self.status = status
        self.lost = threading.Event()
        self._fd = _tty_fd()
        self._thread = threading.Thread(target=self._watch, name="lrwatch-terminal-watch", daemon=True)

    def start(self) -> TerminalWatch:
        signal.signal(signal.SIGHUP, lambda *_: self.lost.set())
        self._thread.start()
        return self

    def _tty_answers(self) -> bool:
        if self._fd is None:
            return False
        try:
            termios.tcgetattr(self._fd)
        except (termios.error, OSError):
            return False
        return True

    def _watch(self) -> None:
        while not self.lost.wait(TERMINAL_POLL_SECONDS):
            if self._fd is not None and not self._tty_answers():
                break
        if self.graceful is not None and self._tty_answers():
            exit_after(GRACEFUL_EXIT_SECONDS, self.status)
            self.graceful()
            return
        os._exit(self.status)


def _tty_fd() -> int | None:
    for stream in (sys.__stdin__, sys.__stdout__):
        with contextlib.suppress(AttributeError, ValueError, OSError):
            if stream is not None and os.isatty(stream.fileno()):
                return stream.fileno()
    return None


def exit_after(seconds: float, status: int) -> None:
    """Make sure this process is gone ``seconds`` from now, whatever else happens (SIGTERM's promise)."""

    def later() -> None:
        time.sleep(seconds)
        os._exit(status)

    threading.Thread(target=later, name="lrwatch-exit-deadline", daemon=True).start()


def run_monitor(
    source: RemoteRunSource,
    *,
    owner: bool,
    fps: float,
    ascii_markers: bool,
    notes: Any = None,
    race_steps: int | None = None,
) -> Any:
    """The monitor on ``source`` in this terminal; returns the app (its ``return_code`` and ``detached``)."""
    from lrwatch.app import LRWatchApp
    from lrwatch.protocol.commands import Stop

    view = {"fps": fps, "ascii_markers": ascii_markers, "notes": notes, "race_steps": race_steps}
    app = LRWatchApp.attached(source.start(), owner=owner, **view)

    def hung_up() -> None:  # the terminal still answers: leave it as we found it
        app.hung_up = True
        app.call_from_thread(app.exit)

    TerminalWatch(graceful=hung_up).start()

    def on_sigterm(_signum: int, _frame: object) -> None:
        exit_after(SIGTERM_GRACE_SECONDS + 1.0, 128 + signal.SIGTERM)
        if owner and not source.cancel():  # a run that has not answered yet is cancelled, not left running
            source.submit(Stop("SIGTERM"))
        app.call_later(app.exit)

    signal.signal(signal.SIGTERM, on_sigterm)
    app.run()
    return app
