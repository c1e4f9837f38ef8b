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
import json
import os
import socket
import stat
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LIVE_NAME = "live.json"
MAX_SOCKET_PATH = 107


class SocketDirError(OSError):
    """The socket directory is not private to this user; the message says what is wrong, in one line."""


def socket_dir() -> Path:
    """This user's socket directory, created 0700 if missing; its owner and mode are checked."""
    uid = os.getuid()
    base = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
    path = base / f"lrwatch-{uid}"
    if len(str(path)) + len("/4194304-99999.sock") > MAX_SOCKET_PATH:
        path = Path("/tmp") / f"lrwatch-{uid}"  # a deep TMPDIR: the socket path must still fit
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise SocketDirError(f"{path} is not a directory (a symlink?): refusing to serve a socket there")
    if info.st_uid != uid:
        raise SocketDirError(f"{path} belongs to uid {info.st_uid}, not {uid}: refusing to serve a socket there")
    if info.st_mode & 0o077:
        raise SocketDirError(f"{path} has mode {oct(info.st_mode & 0o777)}, not 0700: refusing to use it")
    return path


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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def publish(record: LiveRecord) -> None:
    """Write the run's records: ``<pid>.json`` beside the socket and ``live.json`` in the run directory."""
    sock = Path(record.socket)
    _write_json(sock.with_suffix(".json"), record.to_dict())
    _write_json(Path(record.run_dir) / LIVE_NAME, record.to_dict())


def unpublish(record: LiveRecord) -> None:
    """Remove the socket and both records (at exit, or when found stale)."""
    sock = Path(record.socket)
    for path in (sock, sock.with_suffix(".json")):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    live = Path(record.run_dir) / LIVE_NAME
    with contextlib.suppress(FileNotFoundError, ValueError, OSError):
        if LiveRecord.from_dict(json.loads(live.read_text(encoding="utf-8"))).pid == record.pid:
            live.unlink()


def read_record(path: Path) -> LiveRecord | None:
    try:
        return LiveRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def answers(path: str, timeout: float = 1.0) -> bool:
    """Whether something accepts connections at the socket ``path``."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def is_stale(record: LiveRecord) -> bool:
    """The training process is gone, or its socket refuses connections (a ``kill -9`` leaves both)."""
    if not pid_alive(record.pid):
        return True
    return not Path(record.socket).exists() or not answers(record.socket)


def live_runs(clean: bool = True) -> tuple[list[LiveRecord], list[LiveRecord]]:
    """``(live, stale)`` runs of this user, newest first; stale ones are removed when ``clean``."""
    try:
        directory = socket_dir()
    except OSError:
        return [], []
    live, stale = [], []
    for path in directory.glob("*.json"):
        record = read_record(path)
        if record is None:
            continue
        if is_stale(record):
            stale.append(record)
            if clean:
                unpublish(record)
        else:
            live.append(record)
    live.sort(key=lambda r: r.started, reverse=True)
    return live, stale


def record_of_run_dir(run_dir: str | Path) -> LiveRecord | None:
    """The live record a run directory names, if any (stale or not)."""
    return read_record(Path(run_dir) / LIVE_NAME)


def run_alive(run_dir: str | Path) -> bool:
    """Whether a process of this machine still writes ``run_dir`` (its ``live.json`` names a live pid).
    A run that ended removed its record; one killed with ``-9`` left it, naming a dead pid."""
    record = record_of_run_dir(run_dir)
    return record is not None and pid_alive(record.pid)


LAUNCHER_ENV = "LRWATCH_LAUNCHER"  # set by lrwatch run --nproc-per-node for its ranks: its own pid
_serial = iter(range(1, 1 << 62))


def new_record(run_dir: str | Path) -> LiveRecord:
    """A record for a run of this process (a process may run several, one after another)."""
    path = socket_dir() / f"{os.getpid()}-{next(_serial)}.sock"
    launcher = os.environ.get(LAUNCHER_ENV, "")
    return LiveRecord(
        os.getpid(), str(path), str(Path(run_dir).resolve()), time.time(), int(launcher) if launcher.isdigit() else None
    )
