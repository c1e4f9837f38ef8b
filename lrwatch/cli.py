"""``lrwatch`` command line: ``demo`` (live monitor or ``--headless``) and ``schedule`` (the preview as data)."""

from __future__ import annotations

import argparse
import csv
import json
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from lrwatch.schedules import KINDS, ScheduleSpec, SpecError, parse_spec
from lrwatch.timeline import Timeline

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


@dataclass(frozen=True)
class SwitchAt:
    epoch: float
    spec: ScheduleSpec

    def step(self, steps_per_epoch: int) -> int:
        return round(self.epoch * steps_per_epoch)


def spec_arg(text: str) -> ScheduleSpec:
    try:
        return parse_spec(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def switch_arg(text: str) -> SwitchAt:
    epoch_text, sep, spec_text = text.partition(":")
    try:
        epoch = float(epoch_text)
    except ValueError:
        epoch = float("nan")
    if not sep or not np.isfinite(epoch) or epoch < 0:
        raise argparse.ArgumentTypeError(f"expected EPOCH:SPEC with EPOCH >= 0, e.g. 10:cosine:T_max=20, got {text!r}")
    return SwitchAt(epoch, spec_arg(spec_text))


def _positive(kind: type) -> callable:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} > 0 (got {text!r})") from None
        if not (value > 0 and np.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} > 0 (got {text!r})")
        return value

    parse.__name__ = kind.__name__
    return parse


def _add_schedule_args(p: argparse.ArgumentParser, *, lr_default: float | None, epochs_default: int | None) -> None:
    kinds = ", ".join(KINDS)
    p.add_argument(
        "--switch",
        type=switch_arg,
        action="append",
        default=[],
        metavar="EPOCH:SPEC",
        help="switch to SPEC at EPOCH (repeatable), exactly as a key press would",
    )
    p.add_argument("--lr", type=_positive(float), default=lr_default, required=lr_default is None, help="initial LR")
    p.add_argument(
        "--epochs", type=_positive(int), default=epochs_default, required=epochs_default is None, help="epochs"
    )
    p.add_argument("--per-epoch", action="store_true", help="update the LR once per epoch (default: every batch)")
    p.epilog = f"SPEC is KIND[:key=value,...], KIND one of {kinds}; e.g. cosine-restarts:T_0=10,T_mult=2"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lrwatch", description="Watch and switch learning-rate schedules while PyTorch trains.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    demo = sub.add_parser("demo", help="train the demo model under the live monitor (or --headless)")
    demo.add_argument("--headless", action="store_true", help="no UI: print one line per epoch")
    demo.add_argument(
        "--schedule", type=spec_arg, default=parse_spec("cosine"), metavar="SPEC", help="initial schedule"
    )
    _add_schedule_args(demo, lr_default=0.05, epochs_default=40)
    demo.add_argument("--steps-per-epoch", type=_positive(int), default=None, help="default: one pass over the data")
    demo.add_argument("--batch-size", type=_positive(int), default=128)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    demo.add_argument("--run-dir", type=Path, default=None, help="default: runs/<timestamp>")
    demo.add_argument("--fps", type=_positive(float), default=4.0, help="max plot redraws per second (UI)")
    demo.add_argument("--ascii", action="store_true", help="plain-character plot markers instead of braille")

    sched = sub.add_parser("schedule", help="print or draw the LR sequence of schedules (the scriptable preview)")
    sched.add_argument("spec", type=spec_arg, nargs="+", metavar="SPEC", help="one, or several to overlay")
    _add_schedule_args(sched, lr_default=None, epochs_default=None)
    _add_output_args(sched, default_format="csv")

    compare = sub.add_parser("compare", help="draw the textbook comparison: step, exponential, cosine, SGDR")
    compare.set_defaults(spec=[parse_spec(text) for text in TEXTBOOK], switch=[])
    compare.add_argument("--lr", type=_positive(float), default=0.1, help="initial LR (default 0.1)")
    compare.add_argument("--epochs", type=_positive(int), default=50, help="epochs (default 50)")
    compare.add_argument("--per-epoch", action="store_true", help="staircase: update the LR once per epoch")
    _add_output_args(compare, default_format="plot")
    return parser


def _add_output_args(p: argparse.ArgumentParser, *, default_format: str) -> None:
    p.add_argument("--steps-per-epoch", type=_positive(int), default=None, help="default: 1, or 20 for plots")
    p.add_argument("--format", choices=("csv", "json", "plot"), default=default_format)
    p.add_argument("--log-y", action="store_true", help="log-scale y axis (plot)")


def build_timeline(
    spec: ScheduleSpec, switches: Sequence[SwitchAt], *, lr: float, steps_per_epoch: int, epochs: int, per_epoch: bool
) -> Timeline:
    total = steps_per_epoch * epochs
    timeline = Timeline.start(spec, lr=lr, steps_per_epoch=steps_per_epoch, total_steps=total, per_epoch=per_epoch)
    for sw in sorted(switches, key=lambda s: s.epoch):
        timeline = timeline.switch(sw.step(steps_per_epoch), sw.spec)
    return timeline


TEXTBOOK = (
    "step:step_size=10,gamma=0.5",
    "exp:gamma=0.95",
    "cosine:T_max=50",
    "cosine-restarts:T_0=10,T_mult=2",
)


def cmd_schedule(args: argparse.Namespace) -> int:
    """Print or draw one schedule, or overlay several (``lrwatch compare`` draws the textbook four)."""
    if args.switch and len(args.spec) > 1:
        raise UsageError(f"lrwatch {args.command}: --switch applies to a single SPEC (got {len(args.spec)})")
    timelines = [
        build_timeline(
            spec,
            args.switch,
            lr=args.lr,
            steps_per_epoch=args.steps_per_epoch,
            epochs=args.epochs,
            per_epoch=args.per_epoch,
        )
        for spec in args.spec
    ]
    names = [str(t.segments[0].spec) for t in timelines]
    steps = np.arange(timelines[0].total_steps)
    epochs = timelines[0].epoch_at(steps)
    lrs = [t.lrs(steps) for t in timelines]
    out = sys.stdout
    if args.format == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["step", "epoch", *(["lr"] if len(names) == 1 else names)])
        columns = [steps.tolist(), [repr(e) for e in epochs.tolist()], *([repr(v) for v in lr.tolist()] for lr in lrs)]
        writer.writerows(zip(*columns, strict=True))
    elif args.format == "json":
        schedules = [
            {"spec": name, "timeline": t.to_dict(), "lr": lr.tolist()}
            for name, t, lr in zip(names, timelines, lrs, strict=True)
        ]
        json.dump({"step": steps.tolist(), "epoch": epochs.tolist(), "schedules": schedules}, out)
        out.write("\n")
    else:
        from lrwatch.plot import legend_line, terminal_size, text_chart

        width, height = terminal_size()
        height -= len(names) if len(names) > 1 else 0  # room for the legend below
        title = f"learning rate · lr {args.lr:g} · {args.epochs} epochs"
        if len(names) == 1:
            title = f"learning rate · {names[0]} · lr {args.lr:g}"
        chart = text_chart(
            [(name, steps, lr) for name, lr in zip(names, lrs, strict=True)],
            width=width,
            height=height,
            title=title,
            log_y=args.log_y,
            markers=[seg.start_step for seg in timelines[0].segments[1:]],
            steps_per_epoch=timelines[0].steps_per_epoch,
        )
        out.write(chart + "\n")
        if len(names) > 1:
            for i, (name, t) in enumerate(zip(names, timelines, strict=True)):
                out.write(legend_line(i, f"{name:<34} {t.segments[0].schedule.torch_line()}") + "\n")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lrwatch.demo import DemoConfig, DemoTask
    from lrwatch.engine import Engine
    from lrwatch.protocol import Stop, Switch
    from lrwatch.rundir import default_run_dir

    config = DemoConfig(
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
    )
    try:
        task = DemoTask(config)
    except ValueError as exc:
        raise UsageError(f"lrwatch demo: {exc}") from None
    timeline = build_timeline(
        args.schedule, [], lr=args.lr, steps_per_epoch=config.steps, epochs=config.epochs, per_epoch=args.per_epoch
    )
    run_dir = args.run_dir or default_run_dir()
    settings = {k: (str(v) if isinstance(v, (Path, ScheduleSpec)) else v) for k, v in vars(args).items()}
    settings["switch"] = [f"{sw.epoch:g}:{sw.spec}" for sw in args.switch]
    engine = Engine(
        task.optimizer,
        timeline,
        run_dir=run_dir,
        config={"command": "demo", **settings, "device": str(task.device), "steps_per_epoch": config.steps},
    )
    for sw in args.switch:
        engine.schedule_command(sw.step(config.steps), Switch(str(sw.spec)))

    if not args.headless:
        from lrwatch.app import LRWatchApp

        app = LRWatchApp(engine, task.train, device=str(task.device), fps=args.fps, ascii_markers=args.ascii)

        def on_signal_ui(signum: int, _frame: object) -> None:
            # The handler runs between two steps of the app's own event loop: hand it over.
            engine.submit(Stop(reason=signal.Signals(signum).name))
            app.call_later(app.action_quit_run)

        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, on_signal_ui)
        app.run()
        return app.return_code or 0

    def on_signal(signum: int, _frame: object) -> None:
        engine.submit(Stop(reason=signal.Signals(signum).name))
        if signum == signal.SIGINT:  # a second Ctrl+C interrupts at once
            signal.signal(signal.SIGINT, signal.default_int_handler)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"lrwatch demo: {config.epochs} epochs × {config.steps} steps on {task.device}, run dir {run_dir}")
    engine.add_listener(_HeadlessPrinter(engine))
    try:
        engine.run(task.train)
    except KeyboardInterrupt:
        return 130
    return 1 if engine.state == "error" else 0


class _HeadlessPrinter:
    """One line per epoch, and one per switch, pause, stop or error."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.last_step = 0
        import time

        self.clock = time.perf_counter
        self.last_time = self.clock()

    def __call__(self, event) -> None:
        k = self.engine.timeline.steps_per_epoch
        total_epochs = (self.engine.timeline.total_steps or 0) // k
        if event.kind == "epoch":
            now = self.clock()
            rate = (event.step - self.last_step) / max(now - self.last_time, 1e-9)
            self.last_step, self.last_time = event.step, now
            last = self.engine.history.last() or {}
            val = event.data
            print(
                f"epoch {round(event.epoch):>3}/{total_epochs}  step {event.step:>6}  lr {last.get('lr', 0):.4g}  "
                f"loss {last.get('loss', float('nan')):.4f}  val_loss {val.get('val_loss', float('nan')):.4f}  "
                f"val_acc {100 * val.get('val_acc', float('nan')):.1f}%  {rate:.0f} steps/s",
                flush=True,
            )
        elif event.kind in ("switch", "edit"):
            print(f"  {event.kind} at step {event.step} (epoch {event.epoch:g}): {event.data['spec']}", flush=True)
        elif event.kind == "rejected":
            print(f"  rejected at step {event.step}: {event.data['reason']}", flush=True)
        elif event.kind in ("stop", "error"):
            detail = event.data.get("reason") or event.data.get("message", "")
            print(f"  {event.kind} at step {event.step}: {detail}", file=sys.stderr, flush=True)
        elif event.kind == "finish":
            print(f"{event.data['status']} at step {event.step}; run dir {self.engine.run_dir}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in ("schedule", "compare"):
            if args.steps_per_epoch is None:  # smooth per-batch curves in plots; one row per epoch in data
                args.steps_per_epoch = 20 if args.format == "plot" and not args.per_epoch else 1
            return cmd_schedule(args)
        return cmd_demo(args)
    except (UsageError, SpecError) as exc:
        print(str(exc) if isinstance(exc, UsageError) else f"lrwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
