"""Where live runs are found: the per-user socket directory, each run's socket and its records.

A run that trains serves its socket at ``${TMPDIR:-/tmp}/lrwatch-$UID/<pid>.sock``: a filesystem
socket (not the abstract namespace, which any uid can reach), in a directory of mode 0700 owned by
the user, checked before use, that survives the user's logout (``$XDG_RUNTIME_DIR`` does not: logind
removes it when the last session ends, and an SSH drop can be exactly that). The path stays short
whatever the run directory (AF_UNIX paths stop at 107 bytes). Beside it ``<pid>.json`` names the run
directory, and the run directory's ``live.json`` names the socket; both go at exit. A record whose
process is gone, or whose socket refuses connections, is stale: :func:`live_runs` removes it and says so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import stat
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lrwatch.record.safefile import replace_text

LIVE_NAME = "live.json"
MAX_SOCKET_PATH = 107


class SocketDirError(OSError):
    """The socket directory is not private to this user; the message says what is wrong, in one line."""


FALLBACKS = 9  # lrwatch-$UID-1 ... -9: where runs go when lrwatch-$UID is taken by another user
_said_fallback: set[str] = set()


def _private_dir(path: Path, uid: int) -> str | None:
    """Make ``path`` (mode 0700) if missing; what keeps it from being this user's private directory, or ``None``."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory (a symlink?)"
    if info.st_uid != uid:
        return f"{path} belongs to uid {info.st_uid}, not {uid}"
    if info.st_mode & 0o077:
        return f"{path} has mode {oct(info.st_mode & 0o777)}, not 0700"
    return None


def socket_dir() -> Path:
    """This user's socket directory, created 0700 if missing; its owner and mode are checked. When the default
    (``${TMPDIR:-/tmp}/lrwatch-$UID``) is not private to this user (another user made it first), the first
    private one of ``lrwatch-$UID-1`` ... ``-9`` is used, the same in every process of the user, and said once."""
    uid = os.getuid()
    base = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
    path = base / f"lrwatch-{uid}"
    if len(str(path)) + len("-9/4194304-99999.sock") > MAX_SOCKET_PATH:
        path = Path("/tmp") / f"lrwatch-{uid}"  # a deep TMPDIR: the socket path must still fit
    problem = _private_dir(path, uid)
    if problem is None:
        return path
    for n in range(1, FALLBACKS + 1):
        fallback = path.with_name(f"{path.name}-{n}")
        if _private_dir(fallback, uid) is None:
            if problem not in _said_fallback:
                _said_fallback.add(problem)
                print(f"lrwatch: {problem}: using {fallback} for sockets instead", file=sys.stderr, flush=True)
            return fallback
    raise SocketDirError(f"{problem}, and so are {path.name}-1 ... -{FALLBACKS}: refusing to serve a socket there")


SOCKET_NAME = re.compile(r"(\d+)-(\d+)\.sock")


def record_problem(record: LiveRecord) -> str | None:
    """Why a record must not be trusted (its socket lies outside this user's socket directory, or is not named
    for its pid), or ``None``: only such a record's socket and ``<pid>.json`` may ever be removed."""
    sock = Path(record.socket)
    try:
        directory = socket_dir()
    except OSError as exc:
        return str(exc)
    match = SOCKET_NAME.fullmatch(sock.name)
    if sock.parent != directory or match is None:
        return f"its socket {record.socket} is not in your socket directory {directory}"
    if int(match.group(1)) != record.pid:
        return f"its socket {sock.name} is not named for its pid {record.pid}"
    return None


def bind_socket(path: str, backlog: int) -> tuple[socket.socket, int]:
    """A non-blocking socket listening at ``path`` (mode 0600) and its inode; what was at ``path`` is removed
    (it is this user's: the directory is 0700)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a stale socket of a dead process with our pid, or what replaced ours
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, 0o600)  # the directory is 0700 already: nobody else could reach it meanwhile
        listener.listen(backlog)
        listener.setblocking(False)
        return listener, os.stat(path).st_ino
    except OSError:
        listener.close()
        raise


def socket_replaced(path: str, inode: int) -> bool:
    """Whether the socket file at ``path`` is gone, or is not the one bound (``inode``)."""
    try:
        return os.stat(path).st_ino != inode
    except OSError:
        return True


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists and is no zombie (killed, its parent not yet waiting for it;
    a container's init may never reap it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError, IndexError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat[stat.rindex(")") + 2] not in "ZX"  # the state follows the command name in parentheses
    return True


@dataclass(frozen=True)
class LiveRecord:
    """One live run as its records say: which process trains, where it serves, where it writes."""

    pid: int
    socket: str
    run_dir: str
    started: float
    launcher: int | None = None  # the process that started this one for a monitor (torchrun's agent under DDP)

    def to_dict(self) -> dict[str, Any]:
        data = {"pid": self.pid, "socket": self.socket, "run_dir": self.run_dir, "started": self.started}
        return data | ({"launcher": self.launcher} if self.launcher is not None else {})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiveRecord:
        launcher = int(data["launcher"]) if data.get("launcher") is not None else None
        return cls(
            int(data["pid"]), str(data["socket"]), str(data["run_dir"]), float(data.get("started", 0.0)), launcher
        )


def _write_json(path: Path, data: dict[str, Any]) -> None:
    replace_text(path, json.dumps(data) + "\n", mode=0o600)  # atomic; a planted link is replaced, not followed


def publish(record: LiveRecord) -> None:
    """Write the run's records: ``<pid>.json`` beside the socket and ``live.json`` in the run directory."""
    sock = Path(record.socket)
    _write_json(sock.with_suffix(".json"), record.to_dict())
    _write_json(Path(record.run_dir) / LIVE_NAME, record.to_dict())


def unpublish(record: LiveRecord) -> None:
    """Remove the socket and both records (at exit, or when its process is gone). Only a record whose socket
    lies in this user's socket directory (:func:`record_problem`) has its files there removed; a link is
    removed, never followed."""
    if record_problem(record) is None:
        sock = Path(record.socket)
        for path in (sock, sock.with_suffix(".json")):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    live = Path(record.run_dir) / LIVE_NAME
    with contextlib.suppress(FileNotFoundError, ValueError, OSError):
        if LiveRecord.from_dict(json.loads(live.read_text(encoding="utf-8"))) == record:
            live.unlink()


def read_record(path: Path) -> LiveRecord | None:
    try:
        return LiveRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


BUSY_ERRNOS = (errno.EAGAIN, errno.ETIMEDOUT)  # a live listener whose accept queue is full
GONE_ERRNOS = (errno.ECONNREFUSED, errno.ENOENT)  # no listener: a dead run, or one serving its socket again


def connect(path: str, timeout: float = 5.0, *, patience: float = 3.0, alive: bool = False) -> socket.socket:
    """A connected socket to ``path``. A busy run (its accept queue full: ``EAGAIN``) is retried for
    ``patience`` seconds before the error is raised; so is a missing listener when the run's process is
    known to be ``alive`` (its socket is being served again)."""
    deadline = time.monotonic() + patience
    pause = 0.02
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            return sock
        except OSError as exc:
            sock.close()
            busy = isinstance(exc, TimeoutError) or exc.errno in BUSY_ERRNOS or (alive and exc.errno in GONE_ERRNOS)
            if not busy or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def answers(path: str, timeout: float = 1.0) -> bool:
    """Whether something accepts connections at the socket ``path`` (a busy one is retried a moment)."""
    try:
        connect(path, timeout, patience=timeout, alive=True).close()
    except OSError:
        return False
    return True


def _started_at(pid: int) -> float | None:
    """When process ``pid`` started (epoch seconds), from ``/proc``; ``None`` if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        btime = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
        return int(btime.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def is_stale(record: LiveRecord) -> bool:
    """The training process is gone (dead, or its pid now names a process started after the record). Only
    that: a live process whose socket is busy or being served again is never stale."""
    if not pid_alive(record.pid):
        return True
    started = _started_at(record.pid)
    return started is not None and record.started > 0 and started > record.started + 2.0  # a reused pid


def live_runs(clean: bool = True) -> tuple[list[LiveRecord], list[LiveRecord]]:
    """``(live, stale)`` runs of this user, newest first; stale ones are removed when ``clean``. Records that
    name a socket elsewhere are ignored."""
    try:
        directory = socket_dir()
    except OSError:
        return [], []
    live, stale = [], []
    for path in directory.glob("*.json"):
        record = read_record(path)
        if record is None or record_problem(record) is not None or Path(record.socket).with_suffix(".json") != path:
            continue
        if is_stale(record):
            stale.append(record)
            if clean:
                unpublish(record)
        else:
            live.append(record)
    live.sort(key=lambda r: r.started, reverse=True)
    return live, stale


_said_ignored: set[str] = set()


def record_of_run_dir(run_dir: str | Path) -> LiveRecord | None:
    """The live record a run directory names, if any (stale or not). A record whose socket lies outside this
    user's socket directory (a planted ``live.json``) is ignored, and said once."""
    record = read_record(Path(run_dir) / LIVE_NAME)
    if record is None:
        return None
    problem = record_problem(record)
    if problem is not None:
        key = f"{run_dir}: {problem}"
        if key not in _said_ignored:
            _said_ignored.add(key)
            print(f"lrwatch: {Path(run_dir) / LIVE_NAME} ignored: {problem}", file=sys.stderr, flush=True)
        return None
    return record


def run_alive(run_dir: str | Path) -> bool:
    """Whether a process of this machine still writes ``run_dir`` (its ``live.json`` names a live pid).
    A run that ended removed its record; one killed with ``-9`` left it, naming a dead pid."""
    record = read_record(Path(run_dir) / LIVE_NAME)
    return record is not None and not is_stale(record)


LAUNCHER_ENV = "LRWATCH_LAUNCHER"  # set by lrwatch run --nproc-per-node for its ranks: its own pid
_serial = iter(range(1, 1 << 62))


def new_record(run_dir: str | Path) -> LiveRecord:
    """A record for a run of this process (a process may run several, one after another)."""
    path = socket_dir() / f"{os.getpid()}-{next(_serial)}.sock"
    launcher = os.environ.get(LAUNCHER_ENV, "")
    return LiveRecord(
        os.getpid(), str(path), str(Path(run_dir).resolve()), time.time(), int(launcher) if launcher.isdigit() else None
    )
