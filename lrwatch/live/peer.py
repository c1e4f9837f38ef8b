"""One client of a run's socket, and what it may cost the run: every peer is bounded in memory and in time.

- **Output.** A subscriber is sent only while it reads: what is new (its snapshot's rows included, sent in
  slices of :data:`~lrwatch.live.feed.ROWS_PER_MESSAGE` rows) is taken from the run's history only while
  less than :data:`LOW_WATER` bytes wait for it, so a client that stops reading costs at most about
  ``LOW_WATER`` plus one message, however long the run (the rest stays in the history it would be read
  from anyway). Replies to its own requests still go out; past :data:`MAX_BACKLOG` unsent bytes it is dropped.
- **Count.** At most :data:`MAX_SUBSCRIBERS` monitors subscribe (the next is told so in one line and closed)
  and at most :func:`max_connections` connections are open at once.
- **Time.** A line left unfinished (or no ``hello``) for :data:`IDLE_LINE_SECONDS` closes the connection
  with one error line; a client that has read nothing of its waiting output for :data:`STALL_SECONDS` is
  dropped (a monitor frozen with Ctrl+Z: ``lrwatch attach`` again).
"""

from __future__ import annotations

import contextlib
import errno
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from lrwatch.live.feed import Feed
from lrwatch.live.sockets import peer_uid
from lrwatch.protocol.wire import MAX_CLIENT_LINE, LineBuffer, encode

MAX_BACKLOG = 8 << 20  # unsent bytes a client may hold; past it, it is dropped (training never waits)
LOW_WATER = 256 << 10  # a subscriber is given more of the run only while less than this waits for it
MAX_SUBSCRIBERS = 64
IDLE_LINE_SECONDS = 10.0  # a half-sent line, or a connection that never says hello
STALL_SECONDS = 60.0  # output waiting and not a byte of it read: the client is dropped (its slot freed)


def max_connections() -> int:
    """Connections open at once: 512, or half the process's file descriptors if that is fewer."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(16, min(512, soft // 2)) if soft > 0 else 512


@dataclass(eq=False)
class Peer:
    """One connection to the run's socket: what it sent, what waits for it, how far its feed has gone."""

    sock: socket.socket
    lines: LineBuffer = field(default_factory=lambda: LineBuffer(MAX_CLIENT_LINE))
    out: bytearray = field(default_factory=bytearray)
    greeted: bool = False
    kind: str = "client"
    owner: bool = False
    detached: bool = False
    feed: Feed | None = None  # a subscriber's: what it has been sent
    rank: str = ""  # a DDP rank's link: "rank 1 (pid 123)"
    closing: bool = False  # close once the output is sent (after an error line)
    waiting: bool = False  # subscribed while the run was starting: its snapshot comes with the engine
    since: float = field(default_factory=time.monotonic)  # when it connected, or last completed a line
    stalled_since: float | None = None  # output waits and none of it could be sent since then

    @property
    def subscribed(self) -> bool:
        return self.feed is not None

    @property
    def hungry(self) -> bool:
        """Whether it has read enough of what it was sent to be given more."""
        return len(self.out) < LOW_WATER

    @property
    def over_budget(self) -> bool:
        return len(self.out) > MAX_BACKLOG

    def sent(self, count: int) -> None:
        """``count`` bytes of its output went out (0: none could)."""
        if count:
            self.stalled_since = None
        elif self.out and self.stalled_since is None:
            self.stalled_since = time.monotonic()

    def stalled(self, now: float) -> bool:
        """It has read nothing of what waits for it for :data:`STALL_SECONDS`."""
        return self.stalled_since is not None and bool(self.out) and now - self.stalled_since > STALL_SECONDS

    def idle_line(self, now: float) -> bool:
        """A line begun (or a hello owed) and left unfinished for :data:`IDLE_LINE_SECONDS`."""
        owed = self.lines.partial or not self.greeted
        return owed and not self.closing and now - self.since > IDLE_LINE_SECONDS


def accept(listener: socket.socket, uid: int, *, open_now: int, limit: int) -> socket.socket | None:
    """The next connection, non-blocking, if it may be served: another uid is closed with no reply at all
    (``SO_PEERCRED``), one past ``limit`` open connections gets one error line."""
    try:
        sock, _ = listener.accept()
    except OSError as exc:
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            time.sleep(0.1)  # out of descriptors: the queue waits, the thread does not spin
        return None
    try:
        if peer_uid(sock) != uid:
            sock.close()
            return None
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    if open_now >= limit:
        turn_away(sock, f"this run has {open_now} connections open, the most it serves: try again later")
        return None
    return sock


def turn_away(sock: socket.socket, message: str) -> None:
    """One error line to a connection the run cannot take, then close it (never blocks)."""
    with contextlib.suppress(OSError):
        sock.setblocking(False)
        sock.send(encode({"type": "error", "message": message}))
    sock.close()


def small_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 31 else -1


def release_memory() -> None:
    """Hand freed heap memory back to the system (glibc's ``malloc_trim``): the output of clients that left
    was freed, but glibc keeps a fragmented heap's pages (measured: 43 of 50 MB after 64 silent subscribers
    left, 2 MB with this). Elsewhere, nothing."""
    global _trim
    if _trim is None:
        _trim = False
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            _trim = ctypes.CDLL("libc.so.6").malloc_trim
    if _trim:
        _trim(0)


_trim: Any = None
