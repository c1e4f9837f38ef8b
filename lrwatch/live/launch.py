"""Runs that outlive their terminal: the run process, started for a monitor that is its client.

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

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrwatch.live.client import RemoteRunSource
from lrwatch.live.sockets import LAUNCHER_ENV, record_of_run_dir, run_alive
from lrwatch.record.console import LOG_NAME

if TYPE_CHECKING:
    from lrwatch.schedule.timeline import Timeline

SPAWNED_FLAG = "--_spawned"
DETACH_WAIT_SECONDS = 2.0


def spawn_run(command: str, argv: Sequence[str], run_dir: Path) -> subprocess.Popen:
    """Start ``lrwatch COMMAND --_spawned ARGV...`` in its own session, writing to ``RUN_DIR/lrwatch.log``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
    log = os.fdopen(os.open(run_dir / LOG_NAME, flags, 0o600), "ab")  # a planted symlink is not followed
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
    (``settings``; see :meth:`lrwatch.live.host.Host.from_environment`). The exit status: 0, or 1 when a rank failed."""
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


def source_for_child(child: subprocess.Popen, run_dir: Path, provisional: Timeline | None = None) -> RemoteRunSource:
    """A monitor's source for the run ``child`` will serve (its ``live.json`` names ``child.pid``);
    ``provisional``: the timeline drawn until the run answers. Cancelled (``q`` before it answered), the
    child gets SIGTERM: a run stopped before its first optimizer step ends at once, with nothing to save."""

    def find() -> str | None:
        record = record_of_run_dir(run_dir)
        ours = record is not None and child.pid in (record.pid, record.launcher)  # a DDP run: rank 0 serves
        return record.socket if ours else None

    def cancel() -> None:
        if child.poll() is None:
            child.terminate()

    source = RemoteRunSource(
        find, owner=True, alive=lambda: child.poll() is None, provisional=provisional, cancel=cancel
    )
    source.detail = lambda: log_tail(run_dir)
    source.fallback = lambda: read_only_source(run_dir)
    return source


def read_only_source(run_dir: Path) -> Any:
    """The run directory, read-only (a run that ended before its monitor connected); ``None`` if unreadable."""
    from lrwatch.record.reader import FileRunSource, RunDirError, RunReader

    try:
        reader = RunReader(run_dir, alive=lambda: run_alive(run_dir))
    except RunDirError:
        return None
    return FileRunSource(reader) if reader.timeline is not None else None
