"""Runs that outlive their terminal: the run process, and the monitor as its client.

``lrwatch demo`` / ``lrwatch run`` with the UI start the run as a process of its own
(:func:`spawn_run`: a new session, so a hangup never reaches it; stdin ``/dev/null``; output to
``RUN_DIR/lrwatch.log``) and then attach to its socket like any other client (:func:`run_monitor`).
The terminal's process only draws: when its terminal goes away (SIGHUP, or the tty answering EIO
with no signal at all, as under some sshd and tmux paths) :class:`TerminalWatch` ends it at once with
``os._exit`` from a thread of its own, so no write blocked on a dead pty (Textual's writer thread
dies on EIO and its bounded queue then blocks the main thread) can ever hold it. Training is in
the other process and notices only a client gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lrwatch.client import RemoteRunSource
from lrwatch.console import LOG_NAME
from lrwatch.sockets import LAUNCHER_ENV, record_of_run_dir

SPAWNED_FLAG = "--_spawned"
TERMINAL_POLL_SECONDS = 0.5
SIGTERM_GRACE_SECONDS = 4.0
DETACH_WAIT_SECONDS = 2.0
GRACEFUL_EXIT_SECONDS = 3.0


def spawn_run(command: str, argv: Sequence[str], run_dir: Path) -> subprocess.Popen:
    """Start ``lrwatch COMMAND --_spawned ARGV...`` in its own session, writing to ``RUN_DIR/lrwatch.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = open(run_dir / LOG_NAME, "ab")
    try:
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        return subprocess.Popen(
            [sys.executable, "-m", "lrwatch.cli", command, SPAWNED_FLAG, *argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    finally:
        log.close()


def run_ranks(script: str, script_args: Sequence[str], nproc: int, settings: dict[str, str]) -> int:
    """``torchrun --standalone --nproc-per-node N SCRIPT ARGS`` in this process (PyTorch's own launcher,
    ``torch.distributed.run``), its ranks told where the run goes through ``LRWATCH_*`` variables
    (``settings``; see :meth:`lrwatch.host.Host.from_environment`). The exit status: 0, or 1 when a rank failed."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    os.environ.update({LAUNCHER_ENV: str(os.getpid()), **settings})
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", script, *script_args])
    except ChildFailedError:
        return 1  # torchrun has printed which rank failed, and how
    return 0


def log_tail(run_dir: Path, lines: int = 12) -> str:
    try:
        text = (run_dir / LOG_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def attach_line(run_dir: Path) -> str:
    return f"lrwatch attach {_shell_path(run_dir)}"


def _shell_path(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def source_for_child(child: subprocess.Popen, run_dir: Path) -> RemoteRunSource:
    """A monitor's source for the run ``child`` will serve (its ``live.json`` names ``child.pid``)."""

    def find() -> str | None:
        record = record_of_run_dir(run_dir)
        ours = record is not None and child.pid in (record.pid, record.launcher)  # a DDP run: rank 0 serves
        return record.socket if ours else None

    source = RemoteRunSource(find, owner=True, alive=lambda: child.poll() is None)
    source.detail = lambda: log_tail(run_dir)
    source.fallback = lambda: read_only_source(run_dir)
    return source


def read_only_source(run_dir: Path) -> Any:
    """The run directory, read-only (a run that ended before its monitor connected); ``None`` if unreadable."""
    from lrwatch.reader import FileRunSource, RunDirError, RunReader

    try:
        reader = RunReader(run_dir)
    except RunDirError:
        return None
    return FileRunSource(reader) if reader.timeline is not None else None


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
    from lrwatch.protocol import Stop

    view = {"fps": fps, "ascii_markers": ascii_markers, "notes": notes, "race_steps": race_steps}
    app = LRWatchApp.attached(source.start(), owner=owner, **view)

    def hung_up() -> None:  # the terminal still answers: leave it as we found it
        app.hung_up = True
        app.call_from_thread(app.exit)

    TerminalWatch(graceful=hung_up).start()

    def on_sigterm(_signum: int, _frame: object) -> None:
        exit_after(SIGTERM_GRACE_SECONDS + 1.0, 128 + signal.SIGTERM)
        if owner:
            source.submit(Stop("SIGTERM"))
        app.call_later(app.exit)

    signal.signal(signal.SIGTERM, on_sigterm)
    app.run()
    return app
