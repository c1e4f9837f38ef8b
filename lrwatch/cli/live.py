"""Commands for live runs: ``attach``, ``ls``, ``send``, and starting a run with its monitor or ``--detach``.

Exit statuses of ``send``: 0 applied, 1 refused by the run (a ``rejected`` event or an error answer),
2 a malformed command line, 3 no live run answers at that path.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrwatch.cli.terminal import run_monitor
from lrwatch.live.client import RemoteRunSource, RunClient, RunGone, socket_of
from lrwatch.live.launch import (
    DETACH_WAIT_SECONDS,
    attach_line,
    log_tail,
    source_for_child,
    spawn_run,
)
from lrwatch.live.sockets import is_stale, live_runs, pid_alive, record_of_run_dir, run_alive, unpublish
from lrwatch.live.starting import STARTING
from lrwatch.protocol.commands import (
    RACE_KEEP,
    Checkpoint,
    Command,
    EditParams,
    FindLr,
    Length,
    Pause,
    Race,
    RaceEnd,
    Resume,
    Stop,
    Switch,
    parse_length,
)
from lrwatch.protocol.events import Event
from lrwatch.protocol.wire import printable
from lrwatch.record.console import LOG_NAME, plain_line
from lrwatch.record.reader import lost_text
from lrwatch.record.rundir import run_dir_problem, steps_done
from lrwatch.schedule.spec import parse_spec

if TYPE_CHECKING:
    from lrwatch.schedule.timeline import Timeline

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_NO_RUN = 3
SEND_TIMEOUT_SECONDS = 60.0
ANSWER_WAIT_SECONDS = 60.0  # --detach: a run answers in about a second (its socket is served before torch loads)
SEND_COMMANDS = (
    "switch SPEC | edit KEY=VALUE[,KEY=VALUE...] | length N (epochs, or Nsteps) | pause | resume | stop | "
    "checkpoint | find-lr | race [SPEC ...] [--keep none|best] [--race-steps N] | race-end [N]"
)


def add_live_commands(sub: Any) -> None:
    attach = sub.add_parser("attach", help="open the monitor on a live run (default: your newest)")
    attach.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR")
    attach.add_argument("--fps", type=float, default=2.0, help="max redraws per second (default 2)")
    attach.add_argument("--ascii", action="store_true", help="plain-character plot markers instead of braille")
    attach.add_argument(
        "--race-steps", type=_steps, default=None, metavar="N",
        help="f races candidates for N steps (default: one epoch or a tenth of the remaining run, the shorter)",
    )  # fmt: skip

    ls = sub.add_parser("ls", help="your live runs: run dir, pid, state, step, schedule, clients")
    ls.add_argument("--json", action="store_true", help="one JSON array of objects")
    ls.add_argument("--wide", action="store_true", help="every value whole, however wide (default: fit the terminal)")

    send = sub.add_parser("send", help="send a command to a live run: switch, pause, stop, race, ...")
    send.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    send.add_argument("words", nargs="+", metavar="COMMAND", help=SEND_COMMANDS)
    send.add_argument("--timeout", type=float, default=SEND_TIMEOUT_SECONDS, help="seconds to wait for the answer")
    send.add_argument(
        "--keep", choices=RACE_KEEP, default=None,
        help="race: when no monitor decides, none (default) restores the snapshot, best keeps the lowest val_loss",
    )  # fmt: skip
    send.add_argument("--race-steps", type=_steps, default=None, metavar="N", help="race: the horizon H in steps")


def _steps(text: str) -> int:
    """A number of steps > 0, for argparse."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a number of steps > 0, got {text!r}")
    return int(text)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- starting a run ---------------------------------------------------------------------------
def launch_run(
    args: argparse.Namespace, command: str, argv: list[str], run_dir: Path, provisional: Timeline | None = None
) -> int:
    """Start the run process; then either show its monitor here (owner), or return (``--detach``).
    ``provisional``: the schedule the run will start from, drawn until it answers (the demo's)."""
    child = spawn_run(command, argv, run_dir)
    if not args.detach:
        _cancel_on_signals(child, command)  # until the monitor takes SIGTERM over: the run never outlives us unseen
    if args.detach:
        started = time.monotonic()
        if not answers_send(child, run_dir):  # so that `lrwatch ... --detach && lrwatch send RUN_DIR ...` works
            code = child.poll()
            if code is None:
                _say(f"lrwatch: the run (pid {child.pid}) has not answered in {ANSWER_WAIT_SECONDS:g} s; "
                     f"see {run_dir / LOG_NAME}")  # fmt: skip
                return 1
            _say(f"lrwatch: the run ended at once (status {code}):\n{log_tail(run_dir)}")
            return code or 1
        print(f"lrwatch {command}: training in the background (pid {child.pid}); run dir {run_dir}")
        print(f"  output: {run_dir / LOG_NAME}")
        print(f"  watch:  {attach_line(run_dir)}")
        try:
            code = child.wait(max(0.0, DETACH_WAIT_SECONDS - (time.monotonic() - started)))  # one that fails at once
        except subprocess.TimeoutExpired:
            return 0
        _say(f"lrwatch: the run ended at once (status {code}):\n{log_tail(run_dir)}")
        return code or 1
    source = source_for_child(child, run_dir, provisional)
    app = run_monitor(source, owner=True, fps=args.fps, ascii_markers=args.ascii, race_steps=args.race_steps)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if source.cancelled:
        try:
            child.wait(10.0)
        except subprocess.TimeoutExpired:
            child.kill()
        _say(f"lrwatch {command}: cancelled before the run's first step; its log: {run_dir / LOG_NAME}")
        return 0
    if app.detached or app.hung_up:
        with contextlib.suppress(OSError, ValueError):  # after a hangup there may be no terminal to print to
            _detached(child.pid, run_dir)
        return 0
    try:
        return child.wait(10.0)
    except subprocess.TimeoutExpired:
        _say(f"lrwatch: the run (pid {child.pid}) is still stopping; {attach_line(run_dir)}")
        return 0


def _cancel_on_signals(child: subprocess.Popen, command: str) -> None:
    """SIGTERM or Ctrl+C before the monitor is up: end the run just started (it has trained nothing) and
    exit, rather than leave it running with no monitor and no word."""

    def cancel(signum: int, _frame: object) -> None:
        if child.poll() is None:
            child.terminate()
        with contextlib.suppress(OSError, ValueError):
            _say(f"lrwatch {command}: cancelled ({signal.Signals(signum).name}) before the run's first step")
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(10.0)
        os._exit(0 if signum == signal.SIGINT else 128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, cancel)


def answers_send(child: subprocess.Popen, run_dir: Path) -> bool:
    """Wait until the run ``child`` serves its socket and answers a ``status`` (as ``send`` would reach it);
    ``False`` if it ended first or took longer than :data:`ANSWER_WAIT_SECONDS`."""
    deadline = time.monotonic() + ANSWER_WAIT_SECONDS
    while child.poll() is None and time.monotonic() < deadline:
        record = record_of_run_dir(run_dir)
        if record is not None and child.pid in (record.pid, record.launcher):
            try:
                client = RunClient(record.socket, kind="ls", timeout=2.0)
                try:
                    client.status()
                    return True
                finally:
                    client.close()
            except (RunGone, OSError, ValueError):
                pass
        time.sleep(0.05)
    return False


# -- attach -----------------------------------------------------------------------------------
def cmd_attach(args: argparse.Namespace) -> int:
    if args.run_dir is None:
        live, stale = live_runs()
        for record in stale:
            _say(f"lrwatch: removed the stale record of pid {record.pid} ({record.run_dir})")
        if not live:
            _say("lrwatch attach: no live runs of yours (lrwatch ls lists them)")
            return EXIT_NO_RUN
        record = live[0]
    else:
        try:
            record = socket_of(args.run_dir)
        except RunGone:
            record = None
        if record is not None and is_stale(record):
            unpublish(record)
            _say(f"lrwatch attach: the run's process {record.pid} is gone; opening its run directory read-only")
            record = None
        if record is None:
            return _view_ended(args)
    source = RemoteRunSource.of_path(record.socket, owner=False, connect_timeout=10.0)
    app = run_monitor(source, owner=False, fps=args.fps, ascii_markers=args.ascii, race_steps=args.race_steps)
    if app.detached:
        _detached(record.pid, Path(record.run_dir))
    return 0


def _detached(pid: int, run_dir: Path) -> None:
    print(f"lrwatch: detached; the run goes on (pid {pid}). Back to it with: {attach_line(run_dir)}")


def _view_ended(args: argparse.Namespace) -> int:
    """A run that is not live opens read-only, like ``lrwatch view``."""
    from lrwatch.app import LRWatchApp
    from lrwatch.record.reader import FileRunSource, RunDirError, RunReader

    try:
        reader = RunReader(args.run_dir, alive=lambda: run_alive(args.run_dir))
    except RunDirError as exc:
        _say(f"lrwatch attach: {exc}")
        return EXIT_NO_RUN
    note = f"The run is {reader.state_text()}: a read-only view of its run directory."
    if reader.status != "lost":
        note = "The run is not live: a read-only view of its run directory."
    LRWatchApp.read_only(FileRunSource(reader), fps=args.fps, ascii_markers=args.ascii, notes=[note]).run()
    return 0


# -- ls ---------------------------------------------------------------------------------------
def run_rows() -> list[dict[str, Any]]:
    """This user's runs as ``lrwatch ls --json`` prints them (lost ones flagged, and their records removed)."""
    live, stale = live_runs()
    rows = []
    for record in live:
        row: dict[str, Any] = {**record.to_dict(), "stale": False}
        try:
            client = RunClient(record.socket, kind="ls", timeout=2.0, alive=True)  # live_runs: its pid lives
            try:
                status = client.status()
            finally:
                client.close()
            shown = ("state", "step", "epoch", "epochs_known", "schedule", "clients", "total_steps")
            row.update({k: getattr(status, k) for k in shown})
            if not status.epochs_known:
                row["epoch"] = None  # steps only: an epoch here would be one step
            if status.state == STARTING:
                row.update(step=None, note="starting (before the script's first optimizer step)")
        except (RunGone, OSError, ValueError) as exc:  # its process lives: busy, never removed
            note = "busy: its process lives but its socket did not answer in time (it is kept; try again)"
            row.update(state="busy", step=None, clients=None, error=str(exc), note=note)
        rows.append(row)
    for record in stale:
        step = steps_done(record.run_dir)
        note = f"{lost_text(step)}; its live record was removed"
        rows.append({**record.to_dict(), "stale": True, "state": "lost", "step": step, "clients": None, "note": note})
    return rows


LS_COLUMNS = ("RUN", "PID", "STATE", "STEP", "EPOCH", "SCHEDULE", "ATT")
NUMERIC = (1, 3, 4, 6)  # right-aligned columns


def _ls_cells(row: dict[str, Any]) -> list[str]:
    step, epoch = row.get("step"), row.get("epoch")
    epochs_known = row.get("epochs_known", True) and epoch is not None and not row.get("stale")
    cells = [
        _short_path(row["run_dir"]),
        str(row["pid"]),
        str(row["state"]),
        "-" if step is None else f"{step:,}",
        f"{epoch:.2f}" if epochs_known else "-",  # a run without epochs counts steps only
        str(row.get("schedule") or "-"),
        "-" if row.get("clients") is None else str(row["clients"]),
    ]
    return [printable(cell) for cell in cells]  # a record's text never drives the terminal


def _short_path(path: str) -> str:
    """A run directory as a user would type it: relative to here when below it, ``~/`` for home."""
    p = Path(path)
    for base, shown in ((Path.cwd(), ""), (Path.home(), "~/")):
        with contextlib.suppress(ValueError):
            return shown + str(p.relative_to(base))
    return path


def ls_table(rows: list[dict[str, Any]], width: int | None) -> list[str]:
    """The ``ls`` table with its header; ``width``: fit it by shortening RUN and SCHEDULE with ``…``
    (``None``: every value whole, ``--wide``)."""
    cells = [list(LS_COLUMNS), *(_ls_cells(row) for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(LS_COLUMNS))]
    if width is not None:
        fixed = sum(w for i, w in enumerate(widths) if i not in (0, 5)) + 2 * (len(widths) - 1)
        room = max(width - 1 - fixed, 2 * 8)
        run_w = min(widths[0], max(8, room - min(widths[5], room // 2)))
        widths[0], widths[5] = run_w, max(min(widths[5], room - run_w), 8)
    lines = []
    for r in cells:
        shown = [_fit(text, widths[i], left=i == 0) for i, text in enumerate(r)]
        aligned = [t.rjust(widths[i]) if i in NUMERIC else t.ljust(widths[i]) for i, t in enumerate(shown)]
        lines.append("  ".join(aligned).rstrip())
    return lines


def _fit(text: str, width: int, *, left: bool) -> str:
    """``text`` in ``width`` columns: a path loses its start (its end names the run), the rest its end."""
    if len(text) <= width:
        return text
    return "…" + text[-(width - 1) :] if left else text[: width - 1] + "…"


def cmd_ls(args: argparse.Namespace) -> int:
    rows = run_rows()
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no live runs")
        return 0
    width = None if args.wide else shutil.get_terminal_size((80, 24)).columns
    for line in ls_table(rows, width):
        print(line)
    for row in rows:
        if row.get("note"):
            print(printable(f"{_short_path(row['run_dir'])}: {row['note']}"))
    return 0


# -- send -------------------------------------------------------------------------------------
def parse_send(words: list[str]) -> Command:
    """``switch SPEC`` and the like → a command; ``ValueError`` with one line if malformed."""
    name, rest = words[0], words[1:]
    simple = {"pause": Pause, "resume": Resume, "stop": Stop, "checkpoint": Checkpoint, "find-lr": FindLr}
    if name in simple:
        if rest:
            raise ValueError(f"{name} takes no arguments (got {' '.join(rest)!r})")
        return simple[name]("send") if name == "stop" else simple[name]()
    if name == "switch":
        if len(rest) != 1:
            raise ValueError("switch takes one SPEC, e.g. switch cosine:T_max=20")
        return Switch(rest[0])
    if name == "length":
        if len(rest) != 1 or parse_length(rest[0]) is None:
            raise ValueError(
                "length takes the run's length: N epochs, or Nsteps (a whole number), e.g. length 5000steps"
            )
        return Length(rest[0])
    if name == "race":
        return Race(tuple(str(parse_spec(word)) for word in rest))
    if name == "race-end":
        if len(rest) > 1 or (rest and not rest[0].lstrip("-").isdigit()):
            raise ValueError("race-end takes the index of the candidate to keep (0: continuing), or nothing to restore")
        return RaceEnd(int(rest[0]) if rest else -1)
    if name == "edit":
        if len(rest) != 1:
            raise ValueError("edit takes KEY=VALUE[,KEY=VALUE...], e.g. edit T_max=30,eta_min=1e-4")
        params: list[tuple[str, float | str]] = []
        for item in rest[0].split(","):
            key, sep, value = item.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"edit: expected KEY=VALUE, got {item!r}")
            try:
                params.append((key.strip(), float(value)))
            except ValueError:
                params.append((key.strip(), value.strip()))  # spec notation (5000steps, 30/60/90): the run checks it
        return EditParams(tuple(params))
    raise ValueError(f"unknown command {name!r}; one of: {SEND_COMMANDS}")


def cmd_send(args: argparse.Namespace) -> int:
    try:
        command = parse_send(args.words)
        if isinstance(command, Race):
            command = Race(command.specs, args.race_steps, args.keep or "none")
        elif args.keep is not None or args.race_steps is not None:
            raise ValueError("--keep and --race-steps go with race")
    except ValueError as exc:
        _say(f"lrwatch send: {exc}")
        return EXIT_USAGE
    problem = run_dir_problem(args.run_dir)
    if problem is not None:
        _say(f"lrwatch send: {problem}")
        return EXIT_NO_RUN
    try:
        record = socket_of(args.run_dir)
        client = RunClient(record.socket, kind="send", timeout=5.0, alive=pid_alive(record.pid))
    except RunGone as exc:
        _say(f"lrwatch send: {exc}")
        return EXIT_NO_RUN
    try:
        status = client.status()
        epochs = status.epochs_known  # a run without epochs: its line says the step only
        if status.state == STARTING:
            _say(f"lrwatch send: {args.run_dir} is starting; the command waits for its first optimizer step")
        answer = client.command(command, timeout=args.timeout)
    except (OSError, ConnectionError, ValueError) as exc:
        _say(f"lrwatch send: no answer from the run ({exc or type(exc).__name__})")
        return EXIT_NO_RUN
    finally:
        client.close()
    if answer["type"] == "error":
        print(json.dumps({"error": answer.get("message")}))
        return EXIT_REFUSED
    event = answer["event"]
    print(json.dumps(event))
    line = plain_line(Event.from_dict(event), epochs=epochs)
    if line is not None:
        _say(line.strip())
    return EXIT_REFUSED if event.get("event") == "rejected" else 0


LIVE_COMMANDS = {"attach": cmd_attach, "ls": cmd_ls, "send": cmd_send}
