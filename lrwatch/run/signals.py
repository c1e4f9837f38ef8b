"""Signals that stop a run, flushed, and a process that then exits within seconds whatever its clients do.

SIGTERM, SIGINT, SIGQUIT and SIGUSR1 (and SIGHUP where a hangup is asked to stop the run) stop it at the
next step boundary: a ``stop`` event, a checkpoint, a ``finish`` event, the run directory closed. Python's
defaults would kill the process mid-step instead (SIGQUIT, SIGUSR1, SIGTERM) and leave a stale record.

Once the run has finished, the process has until :data:`EXIT_DEADLINE_SECONDS` after the signal to exit on
its own; if its teardown lags (a stalled subscriber, a thread that never joins, an atexit hook) it leaves
with ``os._exit`` (:class:`ExitGuard`). The deadline is counted from the signal, but never fires before the
run is flushed: a long checkpoint is waited for.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1)
EXIT_DEADLINE_SECONDS = 4.0
MIN_TEARDOWN_SECONDS = 0.3  # after the finish event: the run directory and the socket are closed by then


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class ExitGuard:
    """After a stop signal, an ``os._exit`` once the run has finished, if the process has not exited by the
    deadline. :meth:`signalled` at the signal; :meth:`watch` the engine whose ``finish`` arms it."""

    def __init__(self, deadline: float = EXIT_DEADLINE_SECONDS) -> None:
        self.deadline = deadline
        self.signalled_at: float | None = None
        self._engines: list[Any] = []
        self._armed = False
        self._lock = threading.Lock()

    def signalled(self, engine: Any = None) -> None:
        """A stop signal came (the first one counts); ``engine``: the run it stops."""
        with self._lock:
            if self.signalled_at is None:
                self.signalled_at = time.monotonic()
        if engine is not None:
            self.watch(engine)

    def watch(self, engine: Any) -> None:
        """Arm at ``engine``'s ``finish`` event (at once if it has finished already)."""
        with self._lock:
            if engine in self._engines:
                return
            self._engines.append(engine)
        if engine.state in ("finished", "stopped", "error"):
            self._arm(engine)
            return
        engine.add_listener(lambda event: self._arm(engine) if event.kind == "finish" else None)

    def _arm(self, engine: Any) -> None:
        with self._lock:
            if self._armed or self.signalled_at is None:
                return
            self._armed = True
        status = 1 if engine.state == "error" else 0
        wait = max(MIN_TEARDOWN_SECONDS, self.signalled_at + self.deadline - time.monotonic())
        threading.Thread(target=_exit_after, args=(wait, status), name="lrwatch-exit-guard", daemon=True).start()


def _exit_after(seconds: float, status: int) -> None:
    time.sleep(seconds)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or lost terminal: exit all the same
            pass
    os._exit(status)


def install(stop: Callable[[str], None], guard: ExitGuard, *, hangup: bool = True) -> dict[int, Any]:
    """In the main thread, where Python's defaults are still in place: each stop signal calls ``stop(NAME)``
    and starts ``guard``; a second SIGINT interrupts at once (``KeyboardInterrupt``). Returns the previous
    handlers (to restore)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, _frame: object) -> None:
        guard.signalled()
        stop(signal_name(signum))
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    defaults = {signal.SIGINT: signal.default_int_handler}
    previous = {}
    for signum in (*STOP_SIGNALS, *((signal.SIGHUP,) if hangup else ())):
        if signal.getsignal(signum) in (defaults.get(signum, signal.SIG_DFL), signal.SIG_DFL):
            previous[signum] = signal.signal(signum, on_signal)
    return previous
