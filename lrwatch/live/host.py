"""Where a watched loop's run goes: the :class:`Host` (headless lines, the socket, the monitor's hooks)
that :func:`lrwatch.watch` attaches its engine to, and :func:`run_loop`, which runs a training function or
a script under a host and ends its run however it exits."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from lrwatch.live.server import RunServer
from lrwatch.live.sockets import new_record
from lrwatch.live.starting import serve_starting
from lrwatch.protocol.commands import Stop
from lrwatch.protocol.events import LIVE_STATES, Event
from lrwatch.record.console import HeadlessPrinter
from lrwatch.run.distributed import RankSync
from lrwatch.run.engine import Engine
from lrwatch.run.signals import ExitGuard, install


@dataclass
class Host:
    """Where a watched loop's monitor goes: set by ``lrwatch run`` / ``lrwatch demo``, else headless
    (or, in a rank that ``lrwatch run --nproc-per-node`` started, from ``LRWATCH_*`` variables).

    ``engine`` is set once :func:`lrwatch.watch` made it, and ``ready`` then.
    """

    headless: bool = True
    run_dir: Path | None = None
    resume: Path | None = None
    log: TextIO | None = field(default_factory=lambda: sys.stderr)
    engine: Engine | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    on_engine: Any = None  # called with the engine before its first step (tests, scripted stops)
    on_divergence: str | None = None  # default: pause with the monitor, stop headless
    spike_factor: float = 10.0
    error: BaseException | None = None  # what the loop raised, if it raised
    serve: bool = True  # serve the run's socket (lrwatch attach, send, ls)
    on_hangup: str = "detach"  # "stop": the run stops when the monitor that started it is lost
    spawned: bool = False  # this process is a run started for a monitor (divergence: pause only while watched)
    schedule: str | None = None  # --schedule: the initial spec (a script's watch(): instead of its own)
    switches: tuple[str, ...] = ()  # --switch EPOCH:SPEC, after the script's own
    early: RunServer | None = None  # served before the engine exists (serve_early): the engine adopts it
    total_steps: int | None = None  # --total-steps: the run's length, for a watch() that does not give it
    own_signals: bool = False  # a plain `python train.py`: stop signals stop its run, flushed (run/signals)
    exit_guard: ExitGuard | None = None  # set by whoever handles the stop signals

    @classmethod
    def from_environment(cls) -> Host:
        """The host of a process ``lrwatch run --nproc-per-node`` started through torchrun (its settings
        come in ``LRWATCH_*`` variables), else the default: headless."""
        env = os.environ
        if "LRWATCH_RUN_DIR" not in env:
            return cls(own_signals=True)
        return cls(
            run_dir=Path(env["LRWATCH_RUN_DIR"]),
            resume=Path(env["LRWATCH_RESUME"]) if env.get("LRWATCH_RESUME") else None,
            on_divergence=env.get("LRWATCH_ON_DIVERGENCE") or None,
            spike_factor=float(env.get("LRWATCH_SPIKE_FACTOR") or 10.0),
            on_hangup=env.get("LRWATCH_ON_HANGUP") or "detach",
            spawned=env.get("LRWATCH_SPAWNED") == "1",
            schedule=env.get("LRWATCH_SCHEDULE") or None,
            switches=tuple(filter(None, env.get("LRWATCH_SWITCHES", "").split("\n"))),
            total_steps=int(env["LRWATCH_TOTAL_STEPS"]) if env.get("LRWATCH_TOTAL_STEPS") else None,
        )

    def serve_early(self, interrupt: Callable[[str], None] | None = None) -> None:
        """Serve the run's socket now, before the script's first step makes the engine (``lrwatch run``,
        ``lrwatch demo``; see :mod:`lrwatch.live.starting`); ``interrupt`` ends the script if stopped meanwhile."""
        if self.serve and self.run_dir is not None and os.environ.get("LRWATCH_NO_SOCKET") != "1":
            self.early = serve_starting(self.run_dir, on_owner_lost=self.on_hangup, interrupt=interrupt)

    def close_early(self) -> None:
        """The script ended without an engine: its starting run's socket goes."""
        if self.early is not None:
            self.early.close()
            self.early = None

    def attach(self, engine: Engine, sync: RankSync | None = None) -> RunServer | None:
        """Take ``engine``: its headless lines and socket (rank 0 only, under DDP)."""
        self.engine = engine
        server = None
        if sync is None or sync.leader:
            if self.log is not None:
                engine.add_listener(HeadlessPrinter(engine, self.log))
            early, self.early = self.early, None
            same_dir = engine.run_dir is not None and early is not None
            if same_dir and engine.run_dir.resolve() == Path(early.record.run_dir):
                server = early  # the socket served while the run was starting: the engine's now
                server.adopt(engine)
                _close_at_finish(engine, server)
            elif self.serve and os.environ.get("LRWATCH_NO_SOCKET") != "1":
                if early is not None:
                    early.close()  # the script's watch() chose another run directory
                lost = sync.peer_lost if sync is not None else None
                server = serve(engine, on_owner_lost=self.on_hangup, on_rank_lost=lost)  # kept until the run ends
        elif self.log is not None and os.environ.get("LRWATCH_ALL_RANKS") == "1":
            engine.add_listener(HeadlessPrinter(engine, self.log, prefix=f"[rank {sync.rank}] "))
        if self.own_signals and sync is None:
            self._stop_on_signals(engine)
        if self.exit_guard is not None:
            self.exit_guard.watch(engine)
        if self.on_engine is not None:
            self.on_engine(engine)
        self.ready.set()
        return server

    def _stop_on_signals(self, engine: Engine) -> None:
        """A plain script's run: SIGTERM, SIGINT, SIGQUIT, SIGUSR1 and SIGHUP stop it at a step boundary,
        flushed, where the script left Python's defaults in place (see :mod:`lrwatch.run.signals`)."""

        def stop(reason: str) -> None:
            if engine.state in LIVE_STATES:
                engine.submit(Stop(reason))

        self.exit_guard = self.exit_guard or ExitGuard()
        install(stop, self.exit_guard)
        self.own_signals = False  # once per process


def serve(
    engine: Engine, *, on_owner_lost: str = "detach", on_rank_lost: Callable[[str, str | None], None] | None = None
) -> RunServer | None:
    """Serve ``engine``'s socket until its run finishes; a socket that cannot be served is a warning, not an error."""
    if engine.run_dir is None:
        return None
    try:
        record = new_record(engine.run_dir)
        server = RunServer(engine, record, on_owner_lost=on_owner_lost, on_rank_lost=on_rank_lost)
        server.start()
    except OSError as exc:
        engine.warn(f"no socket for lrwatch attach/send ({exc}); training goes on")
        return None

    _close_at_finish(engine, server)
    return server


def _close_at_finish(engine: Engine, server: RunServer) -> None:
    def on_event(event: Event) -> None:
        if event.kind == "finish":
            server.close()  # in the training thread, after the run's last event: clients get it too

    engine.add_listener(on_event)


_host_lock = threading.Lock()
_host: Host | None = None


def current_host() -> Host:
    global _host
    with _host_lock:
        if _host is None:
            _host = Host.from_environment()
        return _host


@contextlib.contextmanager
def using_host(host: Host) -> Iterator[Host]:
    """Make ``host`` the one :func:`watch` attaches to, for the duration of the block."""
    global _host
    with _host_lock:
        previous, _host = _host, host
    try:
        yield host
    finally:
        with _host_lock:
            _host = previous


def run_loop(host: Host, target: Any) -> None:
    """Run ``target()`` (a training function or a script) under ``host``; end the run on any exit."""
    with using_host(host):
        try:
            target()
        except SystemExit as exc:  # a script's sys.exit(): 0 ends the run, anything else is an error
            _finish(host, None if exc.code in (0, None) else RuntimeError(f"the script exited with {exc.code}"))
            raise
        except KeyboardInterrupt:
            if host.engine is not None:
                host.engine.interrupted()
            _finish(host)
            raise
        except BaseException as exc:
            _finish(host, exc)
            if not isinstance(exc, Exception):
                raise
            host.error = exc
        else:
            _finish(host)
        finally:
            host.close_early()  # the script ended before its first step: its starting run's socket goes


def _finish(host: Host, error: BaseException | None = None) -> None:
    if host.engine is not None:
        host.engine.finish(error)
