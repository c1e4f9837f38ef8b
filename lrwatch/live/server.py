"""The run's socket server: the engine protocol (commands in; events, status, metric rows out).

One thread, one selector, no work on the training thread beyond what the engine already does: the
server polls the engine's history and event list four times a second and pushes what is new to
each subscribed client, each from the row and event index it has reached, so a snapshot and the
live stream join with no gap and no duplicate (:class:`~lrwatch.live.feed.Feed`). Commands go to
:meth:`Engine.submit`; the event they lead to (``switch``, ``rejected``, ...) comes back to the client
that sent them as a ``result``.

Safety: only this uid may talk (``SO_PEERCRED``; another uid is closed with no reply), the socket is
0600 in a 0700 directory, no TCP. A client's line is at most :data:`~lrwatch.protocol.wire.MAX_CLIENT_LINE`
bytes; a bad line gets one ``error`` line and changes nothing; what each client may cost (memory, count,
time) is bounded (:mod:`lrwatch.live.peer`). A socket file that vanished is served again within a second.
Nothing here raises into the training loop.
"""

from __future__ import annotations

import contextlib
import math
import os
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from lrwatch.live.feed import Feed
from lrwatch.live.peer import MAX_SUBSCRIBERS, Peer, accept, max_connections, release_memory, small_int
from lrwatch.live.sockets import LiveRecord, bind_socket, publish, socket_replaced, unpublish
from lrwatch.protocol.commands import CommandError, Rollback, Stop, command_from_wire
from lrwatch.protocol.events import LIVE_STATES, Event, RunStatus
from lrwatch.protocol.wire import VERSION, WireError, decode, encode
from lrwatch.record.rundir import lrwatch_version
from lrwatch.run.engine import Engine

TICK_SECONDS = 0.25
SEND_CHUNK = 1 << 20
CLOSE_LINGER_SECONDS = 2.0
LISTEN_BACKLOG = 128  # a burst of connections (a script's loop of lrwatch send) waits here, not refused
CHECK_SOCKET_SECONDS = 1.0  # how often the socket file is checked (gone: served again)


class RunServer:
    """Serves ``engine`` at ``record.socket`` from its own thread; :meth:`close` at the end of the run."""

    def __init__(
        self,
        engine: Engine,
        record: LiveRecord,
        *,
        on_owner_lost: str = "detach",
        on_rank_lost: Callable[[str, str | None], None] | None = None,
    ) -> None:
        self.engine = engine
        self.record = record
        self.on_owner_lost = on_owner_lost
        self.on_rank_lost = on_rank_lost  # DDP: ("rank 1 (pid 123)", error) when a rank fails or its link closes
        self.clients: list[Peer] = []
        self._results: deque[tuple[Peer, Any, Event]] = deque()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._uid = os.getuid()
        self._inode = 0
        self._max_connections = max_connections()
        self._left = False  # a subscriber left since the last check: its memory is handed back then

    # -- lifecycle (any thread) -------------------------------------------------------------
    def start(self) -> None:
        self._bind()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        publish(self.record)
        self._thread = threading.Thread(target=self._serve, name="lrwatch-server", daemon=True)
        self._thread.start()

    def _bind(self) -> None:
        self._listener, self._inode = bind_socket(self.record.socket, LISTEN_BACKLOG)
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")

    def _check_socket(self) -> None:
        """Serve again (re-bind, re-publish) if the socket file vanished or was replaced: a run that nobody
        can reach trains on unsteerable. Its records are written again too (a cleaner may have taken them)."""
        if not socket_replaced(self.record.socket, self._inode):
            return
        old = self._listener
        try:
            self._bind()
        except OSError:
            return  # tried again at the next check
        if old is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(old)
            old.close()
        with contextlib.suppress(OSError):  # a read-only run directory: the socket directory's record still is
            publish(self.record)

    def adopt(self, engine: Engine) -> None:
        """The engine of a run served while it was starting (:mod:`lrwatch.live.starting`): the commands
        that waited go to it, and subscribers get their snapshot."""
        starting, self.engine = self.engine, engine
        starting.hand_to(engine)
        self._count_monitors()
        self._wake()

    def close(self) -> None:
        """Send what is left (the ``finish`` event too), close every client, remove the socket and records."""
        if self._thread is None or self._closing.is_set():
            return
        self._closing.set()
        self._wake()
        self._thread.join(CLOSE_LINGER_SECONDS + 1.0)
        unpublish(self.record)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    # -- the server thread ------------------------------------------------------------------
    def _serve(self) -> None:
        last_tick = last_check = 0.0
        try:
            while not self._closing.is_set():
                subscribed = any(c.subscribed for c in self.clients)
                next_at = min(last_tick + TICK_SECONDS if subscribed else math.inf, last_check + CHECK_SOCKET_SECONDS)
                for key, mask in self._selector.select(max(0.0, next_at - time.monotonic())):
                    self._ready(key, mask)
                if time.monotonic() - last_check >= CHECK_SOCKET_SECONDS:
                    last_check = time.monotonic()
                    self._check_socket()
                    for client in [c for c in self.clients if c.idle_line(last_check)]:
                        self._refuse(client, "a line left unfinished: closed")
                    for client in [c for c in self.clients if c.stalled(last_check)]:
                        self._drop(client)  # it read nothing for a minute: its slot goes to another
                    if self._left:
                        self._left = False
                        release_memory()  # what the subscribers that left held goes back to the system
                if not self._starting:
                    for client in [c for c in self.clients if c.waiting]:
                        self._subscribe(client)
                self._send_results()
                if time.monotonic() - last_tick >= TICK_SECONDS:
                    last_tick = time.monotonic()
                    for client in list(self.clients):
                        if client.subscribed:
                            self._push(client)
            self._linger()
        finally:
            for client in list(self.clients):
                self._drop(client)
            if self._listener is not None:
                self._listener.close()
            self._selector.close()
            self._wake_r.close()
            self._wake_w.close()

    def _linger(self) -> None:
        """The run ended: push the last rows and events, then give clients a moment to read them."""
        if self._listener is not None:
            self._selector.unregister(self._listener)
        self._send_results()
        for client in list(self.clients):
            if client.subscribed:
                self._push(client)
            elif client.rank:  # a DDP rank: the run ended, this is no loss
                self._send(client, {"type": "closing", "status": self.engine.state})
        deadline = time.monotonic() + CLOSE_LINGER_SECONDS
        while any(c.out or self._behind(c) for c in self.clients) and time.monotonic() < deadline:
            for key, mask in self._selector.select(0.05):
                if key.data not in ("accept", "wake"):
                    self._ready(key, mask)
            for client in [c for c in self.clients if self._behind(c) and c.hungry]:
                self._push(client)  # what it was not given while it read slowly

    def _behind(self, client: Peer) -> bool:
        return client.feed is not None and client.feed.behind

    def _ready(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data == "accept":
            self._accept()
        elif key.data == "wake":
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
        else:
            client: Peer = key.data
            if mask & selectors.EVENT_READ:
                self._read(client)
            if mask & selectors.EVENT_WRITE and client in self.clients:
                self._flush(client)
                if client in self.clients and client.hungry and self._behind(client):
                    self._push(client)  # it reads: the next slice at once, not at the next tick

    def _accept(self) -> None:
        sock = accept(self._listener, self._uid, open_now=len(self.clients), limit=self._max_connections)
        if sock is not None:
            client = Peer(sock)
            self.clients.append(client)
            self._selector.register(sock, selectors.EVENT_READ, client)
            self._count_monitors()

    def _read(self, client: Peer) -> None:
        try:
            data = client.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        if client.closing:
            return
        try:
            lines = client.lines.feed(data)
        except WireError as exc:
            self._refuse(client, str(exc))
            return
        if lines:
            client.since = time.monotonic()
        for line in lines:
            if client.closing or client not in self.clients:
                return
            try:
                self._handle(client, decode(line))
            except WireError as exc:
                self._refuse(client, str(exc))

    def _refuse(self, client: Peer, message: str) -> None:
        """One error line, then the connection closes: a peer that sent garbage gets no second chance."""
        self._send(client, {"type": "error", "message": message})
        client.closing = True
        self._flush(client)

    def _handle(self, client: Peer, message: dict[str, Any]) -> None:
        kind = message["type"]
        if not client.greeted:
            if kind != "hello":
                raise WireError("the first message must be a hello")
            if message.get("version") != VERSION:
                raise WireError(f"protocol version {message.get('version')!r} is not spoken here (this run: {VERSION})")
            client.greeted = True
            client.kind = str(message.get("client", "client"))[:32]
            client.owner = message.get("owner") is True
            if client.kind == "rank":
                client.rank = f"rank {small_int(message.get('rank'))} (pid {small_int(message.get('pid'))})"
            self._send(client, self._hello())
            return
        if kind == "status":
            self._send(client, {"type": "status", "status": self.status().to_dict()})
        elif kind == "subscribe":
            if self._starting:
                client.waiting = True  # the snapshot comes with the engine; meanwhile, where the run is
                self._send(client, {"type": "status", "status": self.status().to_dict()})
            elif client.feed is None:
                if sum(1 for c in self.clients if c.subscribed or c.waiting) >= MAX_SUBSCRIBERS:
                    self._refuse(client, f"this run has {MAX_SUBSCRIBERS} monitors attached, the most it serves: "
                                 "detach one (lrwatch ls shows them as ATT)")  # fmt: skip
                    return
                self._subscribe(client)
        elif kind == "command":
            self._command(client, message)
        elif kind == "detach":
            client.detached = True
            error = message.get("error")
            if client.rank and isinstance(error, str) and self.on_rank_lost is not None:
                self.on_rank_lost(client.rank, error[:300])
        else:
            self._send(client, {"type": "error", "message": f"unknown request type {kind[:40]!r}"})

    def _command(self, client: Peer, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if not isinstance(request_id, (int, str, type(None))):
            raise WireError("a command's id must be a number or a string")
        try:
            command = command_from_wire(message.get("command"))
        except CommandError as exc:
            self._send(client, {"type": "error", "id": request_id, "message": str(exc)})
            return
        state = self.engine.state
        if isinstance(command, Rollback) and not self.engine.awaits_divergence_answer:
            refusal = {"type": "error", "id": request_id, "message": "rollback: only at a divergence alert"}
            self._send(client, refusal)
            return
        if state not in LIVE_STATES:
            self._send(client, {"type": "error", "id": request_id, "message": f"the run is {state}"})
            return

        def done(event: Event) -> None:  # the training thread, at the step boundary
            self._results.append((client, request_id, event))
            self._wake()

        self.engine.submit(command, on_done=done)

    @property
    def _starting(self) -> bool:
        return getattr(self.engine, "starting", False)

    def _subscribe(self, client: Peer) -> None:
        client.waiting = False
        client.feed = Feed(self.engine)
        client.out += encode(client.feed.snapshot(self.status()))  # its first rows; the rest as it reads
        self._flush(client)
        if client in self.clients:
            self._push(client)
        self._count_monitors()

    def _send_results(self) -> None:
        while self._results:
            client, request_id, event = self._results.popleft()
            if client in self.clients:
                self._send(client, {"type": "result", "id": request_id, "event": event.to_dict()})

    # -- what goes out ----------------------------------------------------------------------
    def _hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "version": VERSION,
            "pid": self.record.pid,
            "run_dir": self.record.run_dir,
            "lrwatch": lrwatch_version(),
        }

    def status(self) -> RunStatus:
        engine = self.engine
        live = {"pid": self.record.pid, "socket": self.record.socket, "run_dir": self.record.run_dir}
        clients = sum(1 for c in self.clients if c.subscribed)
        if self._starting:
            return replace(engine.status(), **live, clients=clients)
        timeline = engine.timeline
        seg = timeline.segment_at(engine.step_index)
        shown = timeline.label_of(seg) if engine.drive_lr or timeline.is_script(seg) else None  # the one in force
        return replace(engine.status(), **live, schedule=shown, clients=clients)

    def _push(self, client: Peer) -> None:
        """What is new for this subscriber since its last push, then the run's status; only as much as it
        reads (:attr:`Peer.hungry`): the rest waits in the run's history, not in memory of its own."""
        if not client.hungry:
            return
        for message in client.feed.news():
            self._send(client, message)
            if client not in self.clients or not client.hungry:
                return
        self._send(client, {"type": "status", "status": self.status().to_dict()})

    def _send(self, client: Peer, message: dict[str, Any]) -> None:
        if client not in self.clients:
            return
        if client.over_budget:
            self._drop(client)  # it stopped reading: training never waits for a client
            return
        was_empty = not client.out
        client.out += encode(message)
        if was_empty:
            self._flush(client)

    def _flush(self, client: Peer) -> None:
        total = 0
        try:
            while client.out:
                sent = client.sock.send(client.out[:SEND_CHUNK])
                del client.out[:sent]
                total += sent
        except BlockingIOError:
            pass
        except OSError:
            self._drop(client)
            return
        client.sent(total)
        if client.closing and not client.out:
            self._drop(client)
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if client.out else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(client.sock, events, client)

    def _drop(self, client: Peer) -> None:
        if client not in self.clients:
            return
        self.clients.remove(client)
        self._left = self._left or client.feed is not None
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(client.sock)
        client.sock.close()
        self._count_monitors()
        if client.rank and not client.detached and not self._closing.is_set() and self.on_rank_lost is not None:
            self.on_rank_lost(client.rank, None)
        gone_unsaid = client.owner and not client.detached and not self._closing.is_set()
        if gone_unsaid and self.on_owner_lost == "stop" and self.engine.state in LIVE_STATES:
            self.engine.submit(Stop("hangup"))  # --on-hangup stop: the monitor that started the run is gone

    def _count_monitors(self) -> None:
        self.engine.monitors = sum(1 for c in self.clients if c.subscribed and c.kind == "monitor")
