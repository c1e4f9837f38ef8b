"""Where a run's text goes: headless lines, the script's prints, and ``RUN_DIR/lrwatch.log``.

While the terminal is there, output goes to it. When it goes away (a hangup, or a write that fails
with EIO or EPIPE: a dropped SSH link, a closed tmux window, a closed pipe), :class:`Console` moves
file descriptors 1 and 2 onto ``RUN_DIR/lrwatch.log`` (and 0 onto ``/dev/null``), so the process,
its C extensions and its children write there from then on, and a ``print`` in the user's loop never
raises. The headless printer (:class:`HeadlessPrinter`) writes one line per epoch and per notable
event, for the terminal or the log alike.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from lrwatch.protocol.events import Event
from lrwatch.protocol.wire import printable

LOG_NAME = "lrwatch.log"


class Console:
    """Output to the terminal until it is lost, then to ``log_path``; ``on_lost`` is told once."""

    def __init__(self, log_path: str | Path, on_lost: Callable[[str], None] | None = None) -> None:
        self.log_path = Path(log_path)
        self.on_lost = on_lost
        self.lost: str | None = None
        # Reentrant: SIGHUP's handler calls terminal_lost in the main thread, possibly while that thread
        # is inside terminal_lost already (a write that failed with EIO): a plain lock would hang there.
        self._lock = threading.RLock()
        self._streams: list[tuple[str, TextIO]] = []

    def install(self) -> Console:
        """Wrap ``sys.stdout`` and ``sys.stderr`` so that a failed write moves them to the log."""
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _Fallback):
                self._streams.append((name, stream))
                setattr(sys, name, _Fallback(stream, self))
        return self

    def uninstall(self) -> None:
        for name, stream in self._streams:
            if isinstance(getattr(sys, name), _Fallback):
                setattr(sys, name, stream)
        self._streams.clear()

    def terminal_lost(self, why: str) -> None:
        """Move fds 0, 1 and 2 off the terminal (idempotent); say why in the log."""
        with self._lock:
            if self.lost is not None:
                return
            self.lost = why
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            try:
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
            finally:
                os.close(log)
                os.close(null)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            os.write(2, f"lrwatch: {stamp}: the terminal is gone ({why}); output continues here\n".encode())
        if self.on_lost is not None:
            self.on_lost(why)


class _Fallback(io.TextIOBase):
    """A text stream that survives its terminal: a write that fails moves fds 1/2 to the log and retries."""

    def __init__(self, stream: TextIO, console: Console) -> None:
        self._stream = stream
        self._console = console

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError) as exc:
            self._console.terminal_lost(_why(exc))
        with contextlib.suppress(OSError, ValueError):
            return self._stream.write(text)
        return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError) as exc:
            self._console.terminal_lost(_why(exc))
            with contextlib.suppress(OSError, ValueError):
                self._stream.flush()

    def isatty(self) -> bool:
        return self._console.lost is None and self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._stream.encoding

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class HeadlessPrinter:
    """One line per epoch, and one per switch, edit, rejected command, stop or error, to ``out``."""

    def __init__(self, engine: Any, out: TextIO | None = None, prefix: str = "") -> None:
        self.engine = engine
        self.out = out
        self.prefix = prefix  # "[rank 1] " for a DDP rank that was asked to print (LRWATCH_ALL_RANKS=1)
        self.last_step = engine.step_index
        self.clock = time.perf_counter
        self.last_time = self.clock()

    def __call__(self, event: Event) -> None:
        line = self.line(event)
        if line is None:
            return
        # sys.stdout/stderr are read now, not at start: the console may have wrapped them since.
        stream = sys.stderr if event.kind in ("stop", "error") else (self.out or sys.stdout)
        with contextlib.suppress(OSError, ValueError):  # a closed stream must never stop training
            print(self.prefix + line, file=stream, flush=True)

    def line(self, event: Event) -> str | None:
        if event.kind == "epoch":
            now = self.clock()
            rate = (event.step - self.last_step) / max(now - self.last_time, 1e-9)
            self.last_step, self.last_time = event.step, now
            return epoch_line(self.engine, event, rate)
        if event.kind == "finish":
            return f"{event.data['status']} at step {event.step}; run dir {self.engine.run_dir}"
        return plain_line(event, epochs=getattr(self.engine, "epochs_known", True))


def epoch_line(engine: Any, event: Event, rate: float) -> str:
    """``epoch 3/40  step 1200  lr 0.0412  loss 0.3121  val_loss 0.2987  val_acc 91.3%  512 steps/s``: the
    validation metrics the epoch logged, and only those (an ``_acc`` as a percentage)."""
    last = engine.history.last() or {}
    total = engine.timeline.total_steps
    total_epochs = total // engine.timeline.steps_per_epoch if total else "?"
    where = f"epoch {round(event.epoch):>3}/{total_epochs}  " if getattr(engine, "epochs_known", True) else ""
    metrics = "  ".join(
        f"{name} {100 * value:.1f}%" if name.endswith("acc") else f"{name} {value:.4f}"
        for name, value in event.data.items()
    )
    return (
        f"{where}step {event.step:>6}  lr {last.get('lr', 0):.4g}  "
        f"loss {last.get('loss', float('nan')):.4f}  {metrics}{'  ' if metrics else ''}{rate:.0f} steps/s"
    )


@dataclass(frozen=True)
class EventText:
    """An event in words: ``label`` (styled ``style`` in the events panel) and ``detail``."""

    label: str
    detail: str
    style: str


SWITCH_STYLE = "bold #e0a000"


def describe(event: Event) -> EventText | None:
    """The one description of an event, for headless lines, the events panel and ``lrwatch send``
    (``None`` for events not worth a line: epoch ends). Its text may come from the wire (a stop's reason, a
    spec): control characters are shown escaped."""
    text = _describe(event)
    return text if text is None else EventText(printable(text.label), printable(text.detail), text.style)


def _describe(event: Event) -> EventText | None:
    d = event.data
    kind = event.kind
    if kind == "switch":
        return EventText("switch", d["spec"] + (" ↺" if d.get("anchor") == "base" else ""), SWITCH_STYLE)
    if kind == "edit":
        return EventText("edit", d["spec"], SWITCH_STYLE)
    if kind == "plateau":
        return EventText(
            "plateau", f"{d['metric']} {d['value']:.4g}: lr {d['lr_before']:.4g} → {d['lr']:.4g}", SWITCH_STYLE
        )
    if kind == "length":
        return EventText("length", f"{d['total_steps']:,} steps", "cyan")
    if kind == "schedule":  # a script's own schedule, better known; not when only its LRs ahead were refreshed
        return None if d.get("again") else EventText("schedule", str(d.get("schedule", "")), "cyan")
    if kind in ("rejected", "error"):
        return EventText(kind, str(d.get("reason") or d.get("message", "")), "bold red")
    if kind in ("pause", "resume", "stop"):
        return EventText(kind, str(d.get("reason") or ""), "yellow")
    if kind in ("start", "resumed"):  # under lrwatch run: the script's own schedule, as run.json names it
        timeline = d.get("timeline") or {}
        shown = timeline["segments"][0]["spec"] if timeline.get("script") and timeline.get("segments") else ""
        return EventText(kind, shown, "green")
    if kind == "checkpoint":
        return EventText("checkpoint", f"{Path(d['path']).name} ({d.get('reason', 'request')})", "bold cyan")
    if kind == "divergence":
        where = f"on rank {d['rank']} at step {d.get('at_step')}: " if "rank" in d else ""
        loss = f"loss {d['loss']} " if d.get("loss") is not None else ""
        return EventText("diverged", f"{where}{loss}lr {d['lr']:.3g} → {d['action']}", "bold red")
    if kind == "rollback":
        return EventText("rollback", f"to step {d['to_step']}, lr halved", "bold yellow")
    if kind == "warning":
        return EventText("warning", str(d["message"]), "bold yellow")
    if kind == "lr_find":
        return EventText("lr range test", f"suggested lr {lr_text(d['steepest'])} (steepest), "
                         f"{lr_text(d['min_over_10'])} (min/10) over {d['points']} batches", "bold cyan")  # fmt: skip
    if kind in ("race_start", "race", "race_end"):
        return EventText(f"race {d.get('race')}", race_text(kind, d), "bold cyan")
    if kind == "finish":
        return EventText(str(d["status"]), "", "cyan")
    return None


def race_text(kind: str, d: dict) -> str:
    """A race's start, results (the winner against continuing) or end, in one line."""
    if kind == "race_start":
        return f"{len(d['candidates'])} candidates × {d['horizon']} steps from here (keep: {d['keep']})"
    if kind == "race_end":
        if d.get("kept", -1) >= 0:
            return f"kept {d['spec']}"
        return "snapshot restored" + ("" if d.get("outcome") == "restored" else f" ({d.get('outcome')})")
    best = d["candidates"][d["best"]] if d.get("best", -1) >= 0 else None
    if best is None:
        return "no candidate ended with a finite loss"
    by = "val" if d.get("evaluated") else "train loss"
    score = float(best["val_loss"] if d.get("evaluated") else best["train_loss"])  # "nan" may have travelled
    delta = f", Δ {float(best['delta_val']):+.4g} vs continuing" if d.get("evaluated") else ""
    return f"best {best['spec']} ({by} {score:.4g}{delta}) over {d['horizon']} steps"


def lr_text(lr: float | None) -> str:
    """A suggested LR in 3 significant digits, or ``none`` when the range test could not give one."""
    return f"{lr:.3g}" if lr is not None else "none"


def plain_line(event: Event, *, epochs: bool = True) -> str | None:
    """``  switch at step 300 (epoch 1.5): exp:gamma=0.5``: an event as one line of plain text (a run
    without epochs, ``epochs=False``: the step only)."""
    text = describe(event)
    if text is None:
        return None
    detail = f": {text.detail}" if text.detail else ""
    where = f" (epoch {event.epoch:g})" if epochs else ""
    return f"  {text.label} at step {event.step}{where}{detail}"
