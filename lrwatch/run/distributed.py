"""Several ranks, one run: under ``torch.distributed`` every rank applies every command at the same step.

Every rank runs :func:`lrwatch.watch`; rank 0 owns the run directory, the socket and any UI, and
decides. The ranks meet at *sync steps*, where one all-reduce (MAX) of a few ``int64`` on a gloo
group of lrwatch's own (so NCCL streams are never touched) carries, per slot:

- ``stop``: ``signum · 2²⁰ + rank + 1`` of a rank that was asked to stop (SIGTERM, SIGINT): any rank's
  signal reaches all, which a broadcast from rank 0 could not do;
- ``diverged``: ``(2⁴⁰ − step) · 2²⁰ + rank + 1`` of a rank whose loss diverged at ``step`` since the
  last sync step (the MAX is the earliest);
- ``commands``: the length of rank 0's commands as JSON (when there are some, one broadcast of those
  bytes follows: JSON, never pickle);
- ``next``: the next sync step, rank 0's choice; ``action``: rank 0's answer to a divergence.

Rank 0 spaces the sync steps so that the collective costs at most :data:`COST_SHARE` of the
training time: ``K = ⌈c / (COST_SHARE · t)⌉``, clamped to ``[1, ⌈MAX_LATENCY / t⌉]``, with ``c``
the seconds one exchange takes and ``t`` the seconds per step (both moving averages on rank 0).
A command therefore lands within ``K`` steps (about ``c / COST_SHARE`` seconds), on every rank at
the same step. Measured on two CPU ranks (bench/NOTES.md): ``c`` ≈ 0.4–0.7 ms against a 4 ms
demo step, so K ≈ 18.

A rank that dies is named: every other rank holds a connection to rank 0's socket (rank 0 sees
which one closed; the others see rank 0 go), the collective that fails then raises
:class:`RankLost` with that name, and a process whose training thread stays blocked exits after
:data:`LOST_RANK_EXIT_SECONDS`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from lrwatch.protocol.commands import Command, command_from_dict
from lrwatch.protocol.wire import MAX_CLIENT_LINE, VERSION, LineBuffer, WireError, decode, encode

COST_SHARE = 0.01  # the collective's share of training time rank 0 aims for
MAX_LATENCY_SECONDS = 0.25  # ... unless that puts sync steps further apart than this
FIRST_SYNCS = 8  # sync every step at first, to measure
STOP_SCALE = 1 << 20  # a rank below 2²⁰ in the low bits
STEP_LIMIT = 1 << 40
ACTIONS = ("", "pause", "stop", "rollback")
LOST_RANK_EXIT_SECONDS = 20.0
RENDEZVOUS_SECONDS = 120.0  # how long watch() waits for every rank to call it too
SLOTS = ("stop", "diverged", "commands", "next", "action")


class RankLost(RuntimeError):
    """Another rank of the run is gone; the message names it."""


class NotOnEveryRank(RuntimeError):
    """``lrwatch.watch()`` was called on some ranks only (every rank must call it)."""


@dataclass
class Agreement:
    """What every rank learnt at a sync step: the same on all of them."""

    commands: list[Command] = field(default_factory=list)
    stop_rank: int | None = None
    stop_signal: str | None = None
    diverged_rank: int | None = None
    diverged_step: int | None = None
    action: str = ""


class RankSync:
    """One rank's side of the sync steps; build it with :meth:`from_environment` on every rank."""

    def __init__(self, dist: Any, group: Any, rank: int, world_size: int) -> None:
        self.dist = dist
        self.group = group
        self.rank = rank
        self.world_size = world_size
        self.next_step = 0
        self.syncs = 0
        self.sync_seconds = 0.0  # time inside exchanges (rank 0's cost estimate; bench's ddp_sync_cost)
        self._stop_signal = 0
        self._step_seconds = math.nan
        self._cost_seconds = math.nan
        self._last_sync: tuple[int, float] | None = None
        self.lost: str | None = None  # "rank 1 (pid 123) left the run" once a peer's link closed
        self._lost_event = threading.Event()
        self._ended = threading.Event()  # this rank's run has finished (close())
        self._leader_link: socket.socket | None = None

    @classmethod
    def from_environment(cls) -> RankSync | None:
        """A sync for this rank when ``torch.distributed`` is initialised with several ranks, else ``None``.
        Collective: every rank must call it (it creates the gloo group)."""
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() < 2:
            return None
        seconds = float(os.environ.get("LRWATCH_RENDEZVOUS_SECONDS") or RENDEZVOUS_SECONDS)
        try:  # a group with a short timeout first: a watch() called on rank 0 only fails clearly, not in 30 min
            probe = dist.new_group(backend="gloo", timeout=timedelta(seconds=seconds))
        except (RuntimeError, dist.DistError) as exc:
            raise NotOnEveryRank(
                f"rank {dist.get_rank()}: lrwatch.watch() must be called on every rank of a DDP run "
                f"(the other ranks did not call it within {seconds:g} s: {_first_sentence(exc)})"
            ) from None
        dist.destroy_process_group(probe)
        group = dist.new_group(backend="gloo")  # the default timeout: a rank may legitimately be slow
        return cls(dist, group, dist.get_rank(), dist.get_world_size())

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def due(self, step: int) -> bool:
        return step >= self.next_step

    def request_stop(self, signum: int) -> None:
        """A signal on this rank: every rank stops at the next sync step (safe in a signal handler)."""
        self._stop_signal = max(self._stop_signal, int(signum))

    # -- the collective ---------------------------------------------------------------------
    def exchange(self, step: int, commands: list[Command], *, diverged_at: int | None, action: str) -> Agreement:
        """Meet the other ranks at ``step``: rank 0's ``commands`` and ``action``, everyone's stop requests
        and divergences (``diverged_at``: the step this rank's loss diverged at, if it did)."""
        import torch

        started = time.perf_counter()
        slots = torch.zeros(len(SLOTS), dtype=torch.int64)
        if self._stop_signal:
            slots[0] = self._stop_signal * STOP_SCALE + self.rank + 1
        if diverged_at is not None:
            slots[1] = (STEP_LIMIT - diverged_at) * STOP_SCALE + self.rank + 1
        payload = json.dumps([c.to_dict() for c in commands]).encode() if self.leader and commands else b""
        if self.leader:
            slots[2] = len(payload)
            slots[3] = step + self._interval(step, started)
            slots[4] = ACTIONS.index(action) if action in ACTIONS else 0
        try:
            self.dist.all_reduce(slots, op=self.dist.ReduceOp.MAX, group=self.group)
            stop, who_diverged, size, next_step, action_code = (int(v) for v in slots.tolist())
            if size:
                payload = self._broadcast_bytes(payload, size)
                commands = [command_from_dict(d) for d in json.loads(payload.decode())]
        except RuntimeError as exc:
            raise self.lost_error(step, exc) from None
        self.next_step = max(next_step, step + 1)
        elapsed = time.perf_counter() - started
        self.sync_seconds += elapsed
        self._cost_seconds = _ema(self._cost_seconds, elapsed)
        self.syncs += 1
        return Agreement(
            commands=commands if size else [],
            stop_rank=(stop % STOP_SCALE) - 1 if stop else None,
            stop_signal=_signal_name(stop // STOP_SCALE) if stop else None,
            diverged_rank=(who_diverged % STOP_SCALE) - 1 if who_diverged else None,
            diverged_step=STEP_LIMIT - who_diverged // STOP_SCALE if who_diverged else None,
            action=ACTIONS[action_code] if 0 <= action_code < len(ACTIONS) else "",
        )

    def agree(self, engine: Any, wait: float = 0.0) -> None:
        """A sync step of ``engine``'s run: rank 0's queued commands, any rank's stop and divergence, applied
        alike on every rank. ``wait``: rank 0 waits that long for a command first (while paused)."""
        local = engine.commands.take_all(wait) if self.leader else []
        response = engine.divergence
        agreed = self.exchange(
            engine.step_index,
            [command for command, _ in local],
            diverged_at=response.pending[0] if response.pending is not None else None,
            action=response.action() if self.leader else "",
        )
        if agreed.diverged_rank is not None:
            response.act(agreed.action or "stop", agreed.diverged_rank, agreed.diverged_step)
        elif engine.state == "running":
            response.snapshot_if_due(engine.step_index)  # at a sync step: every rank keeps the same one
        done = [on_done for _, on_done in local] if self.leader else [None] * len(agreed.commands)
        for command, on_done in zip(agreed.commands, done, strict=True):
            engine.apply(command, on_done)
        if agreed.stop_rank is not None:
            engine.stop_now(f"{agreed.stop_signal} on rank {agreed.stop_rank}")

    def _interval(self, step: int, now: float) -> int:
        """Steps to the next sync: the collective near :data:`COST_SHARE` of training, at most
        :data:`MAX_LATENCY_SECONDS` apart (see the module's docstring)."""
        last, self._last_sync = self._last_sync, (step, now)
        if last is not None and step > last[0]:
            cost = 0.0 if math.isnan(self._cost_seconds) else self._cost_seconds
            per_step = max((now - last[1] - cost) / (step - last[0]), 1e-7)  # training alone, per step
            self._step_seconds = _ema(self._step_seconds, per_step)
        if self.syncs < FIRST_SYNCS or math.isnan(self._step_seconds) or math.isnan(self._cost_seconds):
            return 1
        by_cost = math.ceil(self._cost_seconds / (COST_SHARE * self._step_seconds))
        by_latency = max(1, math.ceil(MAX_LATENCY_SECONDS / self._step_seconds))
        return max(1, min(by_cost, by_latency))

    def _broadcast_bytes(self, data: bytes, size: int) -> bytes:
        """Rank 0's ``data`` (``size`` bytes, which every rank knows) to every rank, as a uint8 tensor:
        JSON on the wire, never ``broadcast_object_list``'s pickle."""
        import torch

        buffer = torch.zeros(size, dtype=torch.uint8)
        if self.leader:
            buffer.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        self.dist.broadcast(buffer, src=0, group=self.group)
        return buffer.numpy().tobytes()

    def share_leader_socket(self, path: str | None) -> str | None:
        """Rank 0's socket path, learnt by every rank (collective)."""
        import torch

        data = (path or "").encode()
        size = torch.tensor([len(data) if self.leader else 0], dtype=torch.int64)
        self.dist.broadcast(size, src=0, group=self.group)
        n = int(size.item())
        return self._broadcast_bytes(data, n).decode() if n else None

    # -- a rank that is gone ----------------------------------------------------------------
    def peer_lost(self, who: str, error: str | None = None) -> None:
        """A peer's link closed unsaid, or it said it failed with ``error`` (the server thread, or this
        rank's link to rank 0): remember who, and make sure a training thread blocked for good cannot
        keep this process alive."""
        if self.lost is None:
            self.lost = f"{who} left the run" + (f" after {error[:300]}" if error else "")
            self._lost_event.set()
            threading.Thread(target=self._exit_if_blocked, name="lrwatch-rank-lost", daemon=True).start()

    def _exit_if_blocked(self) -> None:
        """The run did not end within :data:`LOST_RANK_EXIT_SECONDS` of a peer's loss: its training thread
        is blocked in a collective that will not return (NCCL can wait for ever). End the process."""
        if self._ended.wait(LOST_RANK_EXIT_SECONDS):
            return  # the run ended (with an error naming the rank): whatever the script does next is its own
        with contextlib.suppress(OSError, ValueError):
            print(f"lrwatch: rank {self.rank}: {self.lost}; exiting", file=sys.stderr, flush=True)
        os._exit(1)

    def lost_error(self, step: int, cause: BaseException | None = None) -> RankLost:
        """The error to end this rank with: who left, if this rank learnt it within a second."""
        self._lost_event.wait(1.0)
        who = self.lost or "another rank left the run"
        detail = f" ({_first_sentence(cause)})" if cause is not None and str(cause).strip() else ""
        return RankLost(f"rank {self.rank} at step {step}: {who}{detail}")

    def link_to_leader(self, path: str | None) -> None:
        """Ranks other than 0: hold a connection to rank 0's socket, so that either side sees the other go."""
        if self.leader or not path:
            return
        link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            link.settimeout(10.0)
            link.connect(path)
            hello = {"type": "hello", "version": VERSION, "client": "rank", "rank": self.rank, "pid": os.getpid()}
            link.sendall(encode(hello))
            link.settimeout(None)
        except OSError:
            link.close()
            return
        self._leader_link = link
        threading.Thread(target=self._watch_leader, args=(link,), name="lrwatch-rank-link", daemon=True).start()

    def _watch_leader(self, link: socket.socket) -> None:
        """Rank 0 says ``closing`` when its run ends; a link that closes without it, or closes after a
        failed run, means rank 0 is gone."""
        lines = LineBuffer(MAX_CLIENT_LINE)
        with contextlib.suppress(OSError, WireError):
            while data := link.recv(65536):
                for line in lines.feed(data):
                    message = decode(line)
                    if message.get("type") == "closing":
                        if message.get("status") not in ("finished", "stopped"):
                            self.peer_lost("rank 0", f"its run ended in {str(message.get('status'))[:20]}")
                        return
        if self._leader_link is link:  # not closed by this rank at its end
            self.peer_lost("rank 0")

    def close(self, error: str | None = None) -> None:
        """This rank's run ended: tell rank 0 (how, if it failed) and drop the link."""
        self._ended.set()
        link, self._leader_link = self._leader_link, None
        if link is not None:
            with contextlib.suppress(OSError):
                link.sendall(encode({"type": "detach", "error": error}))
            with contextlib.suppress(OSError):
                link.close()


def _first_sentence(error: BaseException) -> str:
    """gloo's ``[/path/pair.cc:553] Connection closed by peer [127.0.0.1]:53981. This is typically…``
    → ``Connection closed by peer [127.0.0.1]:53981``."""
    line = str(error).strip().splitlines()[0]
    line = re.sub(r"^\[[^\]]*\.\w+:\d+\]\s*", "", line)
    return line.split(". ")[0][:200]


def _ema(average: float, value: float) -> float:
    return value if math.isnan(average) else 0.8 * average + 0.2 * value


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def install_stop_signals(sync: RankSync) -> None:
    """SIGTERM, SIGINT and SIGHUP stop every rank at one sync step, with a checkpoint, instead of killing
    them mid-step: torchrun's agent passes each of them on to every rank (a dropped terminal too,
    pytorch/pytorch#76894). Only where Python's defaults are still in place, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, _frame: object) -> None:
        sync.request_stop(signum)
        if signum == signal.SIGINT:  # a second Ctrl+C interrupts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    defaults = ((signal.SIGTERM, signal.SIG_DFL), (signal.SIGHUP, signal.SIG_DFL))
    for signum, default in (*defaults, (signal.SIGINT, signal.default_int_handler)):
        if signal.getsignal(signum) is default:
            signal.signal(signum, on_signal)


def rank_error(sync: RankSync, step: int, error: BaseException) -> BaseException:
    """``error`` as this rank should record it: a collective that failed because a rank left (gloo's
    "Connection reset by peer" in DDP's own all-reduce) becomes a :class:`RankLost` naming that rank."""
    if isinstance(error, RankLost):
        return error
    import torch.distributed as dist

    text = str(error)
    if isinstance(error, dist.DistError) or any(w in text for w in ("gloo", "NCCL", "Connection", "by peer")):
        lost = sync.lost_error(step, error)  # waits up to a second to learn who left
        if sync.lost is not None:
            return lost
    return error  # this rank's own error (a ConnectionError of its data loader, say): recorded as it is


def join_ranks(sync: RankSync, engine: Any, leader_socket: str | None) -> None:
    """DDP: commands agreed at sync steps; the ranks watch each other's links; signals stop them all."""
    engine.sync = sync
    if engine.divergence.watch is not None:
        engine.divergence.watch.auto_snapshot = False  # snapshots at sync steps, the same on every rank
    sync.link_to_leader(sync.share_leader_socket(leader_socket))
    install_stop_signals(sync)
    ending: dict[str, str] = {}

    def on_event(event: Any) -> None:
        if event.kind == "error":
            ending["error"] = str(event.data.get("message", ""))
        elif event.kind == "finish":
            sync.close(ending.get("error"))

    engine.add_listener(on_event)
