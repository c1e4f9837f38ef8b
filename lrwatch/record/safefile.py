"""The one owner of lrwatch's file writes: whole files replaced atomically, logs appended with a backlog.

:func:`replace_file` writes ``path`` through a temporary file in the same directory that nobody can plant:
an unnamed ``O_TMPFILE`` (a ``kill -9`` mid-write leaves nothing), or where the filesystem has none a
``mkstemp`` file (``O_EXCL``: a symlink planted at its name is never followed). It is written, fsynced,
named and moved over ``path`` with ``os.replace`` (a symlink planted at ``path`` is replaced, not
followed). On any failure the temporary file goes and :class:`WriteError` says why in words:
``no space left on device: PATH``, ``permission denied: PATH``; the file at ``path`` is untouched.

:class:`AppendLog` appends lines (``metrics.csv``, ``events.jsonl``) through a descriptor opened with
``O_NOFOLLOW``; what cannot be written (a full disk) waits in memory, up to ``limit`` bytes, and goes out
with the next write that succeeds, so the file never holds a cut line followed by another.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TMP_PREFIX = ".lrwatch-"
TMP_SUFFIX = ".tmp"
_PROC_FD = Path("/proc/self/fd")

_WORDS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or directory",
    errno.EIO: "input/output error",
    errno.ELOOP: "a symbolic link is in the way",
    errno.EFBIG: "file too large",
}


class WriteError(OSError):
    """A file lrwatch could not write; ``str()`` is one line in words (``no space left on device: PATH``)."""

    def __str__(self) -> str:
        return f"{self.strerror}: {self.filename}"


def describe(exc: BaseException, path: str | Path) -> WriteError:
    """``exc`` (an ``OSError``, or torch's error around one) as a :class:`WriteError` naming ``path``."""
    code = exc.errno if isinstance(exc, OSError) else None
    words = _WORDS.get(code) if code is not None else None
    if words is None:
        words = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0]).lower()
    return WriteError(code or errno.EIO, words, str(path))


def _umask() -> int:
    """The process umask, read without changing it (``/proc``), else 0o022."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/self/status").read_text().splitlines()
        return int(next(line for line in lines if line.startswith("Umask:")).split()[1], 8)
    return 0o022


class _Checked:
    """A binary file object that remembers the ``OSError`` a write hit (torch wraps it in its own error)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.error: OSError | None = None
        self.position = 0

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        try:
            done = 0
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            self.error = exc
            raise
        self.position += done
        return done

    def flush(self) -> None:
        pass

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _open_temp(directory: Path) -> tuple[int, str | None]:
    """An unnamed temporary file in ``directory`` (``None`` as its name), or a ``mkstemp`` one."""
    if _PROC_FD.is_dir():  # it is named through /proc/self/fd: without /proc, a named temporary file
        with contextlib.suppress(OSError, AttributeError):
            return os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600), None
    import tempfile

    return tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=directory)


def replace_file(path: str | Path, write: Callable[[IO[bytes]], None], *, mode: int | None = None) -> Path:
    """Write ``path`` atomically with ``write(file)`` (a binary file object); ``mode`` defaults to what a
    plain ``open()`` would give (0666 less the umask). :class:`WriteError` on failure, ``path`` untouched."""
    path = Path(path)
    directory = path.parent
    try:
        fd, name = _open_temp(directory)
    except OSError as exc:
        raise describe(exc, path) from None
    out = _Checked(fd)
    try:
        try:
            write(out)  # type: ignore[arg-type]
            os.fchmod(fd, (0o666 & ~_umask()) if mode is None else mode)
            os.fsync(fd)
            if name is None:
                name = _link_temp(fd, directory)
            os.replace(name, path)
            name = None
        finally:
            os.close(fd)
            if name is not None:
                with contextlib.suppress(OSError):
                    os.unlink(name)
    except Exception as exc:
        cause = out.error or exc
        if not isinstance(cause, OSError):
            raise
        raise describe(cause, path) from None
    with contextlib.suppress(OSError):  # the rename itself reaches the disk
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def _link_temp(fd: int, directory: Path) -> str:
    """Give an ``O_TMPFILE`` a fresh random name in ``directory`` (it exists only until ``os.replace``)."""
    root = os.open("/", os.O_RDONLY | os.O_CLOEXEC)  # with a dir_fd, os.link is linkat(AT_SYMLINK_FOLLOW)
    try:
        for _ in range(100):
            name = str(directory / f"{TMP_PREFIX}{secrets.token_hex(8)}{TMP_SUFFIX}")
            try:
                os.link(f"/proc/self/fd/{fd}", name, src_dir_fd=root, follow_symlinks=True)
                return name
            except FileExistsError:
                continue
    finally:
        os.close(root)
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(directory))


def replace_text(path: str | Path, text: str, *, mode: int | None = None) -> Path:
    """:func:`replace_file` with ``text`` (UTF-8)."""
    data = text.encode("utf-8")
    return replace_file(path, lambda f: f.write(data), mode=mode)


def remove_leftovers(directory: str | Path) -> None:
    """Remove temporary files an earlier process left in ``directory`` (killed while saving, on a
    filesystem without ``O_TMPFILE``); only names of lrwatch's pattern, and a link is removed, never followed."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith(TMP_PREFIX) and entry.name.endswith(TMP_SUFFIX):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


def open_append(path: str | Path, *, truncate: bool = False) -> int:
    """A descriptor appending to ``path`` (created if missing), never through a symlink (``O_NOFOLLOW``)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if truncate else 0)
    try:
        return os.open(path, flags, 0o666)
    except OSError as exc:
        raise describe(exc, path) from None


class AppendLog:
    """Lines appended to a file; what a full disk refuses waits in memory (at most ``limit`` bytes; lines
    past it are dropped and counted) and goes out first with the next write that succeeds."""

    def __init__(self, path: str | Path, *, truncate: bool = False, limit: int = 32 << 20) -> None:
        self.path = Path(path)
        self.fd: int | None = open_append(path, truncate=truncate)
        self.pending = bytearray()
        self.limit = limit
        self.dropped = 0  # lines dropped because the backlog was full
        self.error: WriteError | None = None  # the last failure, None once everything is written

    def add(self, text: str) -> None:
        """Queue ``text`` (whole lines)."""
        data = text.encode("utf-8")
        if len(self.pending) + len(data) > self.limit:
            self.dropped += text.count("\n")
            return
        self.pending += data

    def flush(self) -> bool:
        """Write what is queued; ``False`` (and :attr:`error` set) if some of it must wait."""
        while self.pending and self.fd is not None:
            try:
                written = os.write(self.fd, self.pending)
            except OSError as exc:
                self.error = describe(exc, self.path)
                return False
            del self.pending[:written]
        self.error = None
        return True

    def close(self) -> None:
        self.flush()
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
