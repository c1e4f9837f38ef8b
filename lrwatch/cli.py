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

from lrwatch.api import parse_switch
from lrwatch.checkpoints import CheckpointError
from lrwatch.reader import RunDirError, RunReader
from lrwatch.rundir import default_run_dir
from lrwatch.schedules import KINDS, ScheduleSpec, SpecError, parse_spec
from lrwatch.timeline import Timeline

EXIT_USAGE = 2
EXIT_DIVERGED = 3


class UsageError(Exception):
    """Bad arguments: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}".replace("\n", "\\n"))  # one line, whatever was typed


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
    try:
        epoch, spec = parse_switch(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return SwitchAt(epoch, parse_spec(spec))


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
    demo.add_argument(
        "--checkpoint-every",
        type=_positive(float),
        default=None,
        metavar="EPOCHS",
        help="save a checkpoint every EPOCHS epochs (the k key saves one; every stop does)",
    )
    demo.add_argument(
        "--resume",
        type=_run_dir_arg,
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its checkpoint; --schedule/--switch given now become new switches",
    )
    _add_divergence_args(demo)
    _add_live_args(demo)
    _add_ui_args(demo)

    run = sub.add_parser("run", help="run your training script under the monitor (it calls lrwatch.watch)")
    run.add_argument("script", help="path to a Python script that calls lrwatch.watch()")
    run.add_argument("--headless", action="store_true", help="no UI; lrwatch's lines go to stderr")
    run.add_argument("--run-dir", type=Path, default=None, help="default: runs/<timestamp>")
    run.add_argument("--resume", type=_run_dir_arg, default=None, metavar="RUN_DIR", help="continue a run")
    run.add_argument(
        "--nproc-per-node",
        type=_positive(int),
        default=None,
        metavar="N",
        help="DDP: start N ranks with PyTorch's torchrun (torch.distributed.run --standalone); the monitor is rank 0's",
    )
    _add_divergence_args(run)
    _add_live_args(run)
    _add_ui_args(run)
    run.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script, after --")

    from lrwatch.cli_live import add_live_commands

    add_live_commands(sub)

    view = sub.add_parser("view", help="open runs read-only (following them as they grow); several: overlaid")
    view.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    view.add_argument("--summary", action="store_true", help="print a table and what was skipped, no UI")
    _add_ui_args(view)

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


def _add_divergence_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-divergence",
        choices=("pause", "stop", "rollback"),
        default=None,
        help="when the loss is NaN/Inf or spikes: pause (default with the UI), stop (default headless; exit 3), "
        "or rollback (restore the last good weights, halve the LR)",
    )
    p.add_argument(
        "--spike-factor", type=_positive(float), default=10.0, help="a spike: loss > FACTOR × its recent mean"
    )


def _add_live_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detach",
        action="store_true",
        help="train in the background (own session, output to RUN_DIR/lrwatch.log); print the attach line",
    )
    p.add_argument(
        "--on-hangup",
        choices=("detach", "stop"),
        default="detach",
        help="when the terminal goes away: the run goes on (default), or stops with a checkpoint",
    )
    p.add_argument("--_spawned", action="store_true", dest="spawned", help=argparse.SUPPRESS)


def _add_ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fps", type=_positive(float), default=2.0, help="max redraws per second (default 2)")
    p.add_argument("--ascii", action="store_true", help="plain-character plot markers instead of braille")


def _run_dir_arg(text: str) -> Path:
    path = Path(text)
    if not (path / "run.json").is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a run directory (no run.json)")
    return path


def _check_resumable(run_dir: Path | None) -> None:
    """Refuse a bad checkpoint before anything starts (``CheckpointError``: one line, exit 2)."""
    if run_dir is not None:
        from lrwatch.checkpoints import load_checkpoint

        load_checkpoint(run_dir)


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
        from lrwatch.plot import color_wanted, legend_line, terminal_size, text_chart

        color = color_wanted(out)
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
            color=color,
        )
        out.write(chart + "\n")
        if len(names) > 1:
            for i, (name, t) in enumerate(zip(names, timelines, strict=True)):
                out.write(legend_line(i, f"{name:<34} {t.segments[0].schedule.torch_line()}", color=color) + "\n")
    return 0


def _launches(args: argparse.Namespace) -> bool:
    """Whether this command starts the run as a process of its own (the UI, ``--detach``)."""
    return not args.spawned and (args.detach or not args.headless)


def cmd_demo(args: argparse.Namespace) -> int:
    _check_resumable(args.resume)
    run_dir = args.resume or args.run_dir or default_run_dir()
    if _launches(args):  # the run process builds the task: this one need not import torch
        return launch(args, run_dir)
    from lrwatch.demo import DemoConfig, DemoTask

    fields = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "schedule": str(args.schedule),
        "switches": tuple(f"{sw.epoch:g}:{sw.spec}" for sw in args.switch),
        "per_epoch": args.per_epoch,
        "checkpoint_every": args.checkpoint_every,
    }
    if args.resume is not None:
        # The data, model and run length come from the run being resumed; a --schedule or --switch
        # given now is applied as a new switch (see lrwatch.watch).
        fields = DemoConfig.from_run_dir(args.resume).as_fields() | {
            "schedule": str(args.schedule) if args.schedule_given else None,
            "switches": fields["switches"],
            "checkpoint_every": args.checkpoint_every,
        }
    try:
        task = DemoTask(DemoConfig(**fields, device=args.device))
    except ValueError as exc:
        raise UsageError(f"lrwatch demo: {exc}") from None
    if not args.spawned:
        cfg = task.config
        print(f"lrwatch demo: {cfg.epochs} epochs × {cfg.steps} steps on {task.device}, run dir {run_dir}")
    return run_headless(task.train, args, run_dir=run_dir)


def _divergence_args(args: argparse.Namespace) -> dict:
    return {"on_divergence": args.on_divergence, "spike_factor": args.spike_factor}


def run_headless(target, args: argparse.Namespace, *, run_dir, log: str = "stdout") -> int:
    """Run ``target`` in this process, no UI. Ctrl+C and SIGTERM stop it at a step boundary (a second
    Ctrl+C at once). A hangup moves the output to ``RUN_DIR/lrwatch.log`` and training goes on
    (``--on-hangup stop``: it stops, as SIGTERM does). A spawned run (its own session) has no terminal."""
    from lrwatch.console import LOG_NAME, Console
    from lrwatch.host import Host, run_loop
    from lrwatch.protocol import LIVE_STATES, Stop

    stop_on_hangup = args.on_hangup == "stop"
    console = Console(Path(run_dir) / LOG_NAME, on_lost=lambda _why: stop_on_hangup and stop("hangup")).install()
    # (a SIGHUP stops first, under its own name: the console's on_lost then finds the run stopping)
    host = Host(
        headless=True,
        run_dir=Path(run_dir),
        resume=args.resume,
        log=getattr(sys, log),  # the console's stream: it moves to the log when the terminal goes
        on_hangup=args.on_hangup,
        spawned=args.spawned,
        **_divergence_args(args),
    )

    def stop(reason: str) -> None:
        if host.engine is not None and host.engine.state in LIVE_STATES:
            host.engine.submit(Stop(reason=reason))

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            if stop_on_hangup:
                stop("SIGHUP")
            console.terminal_lost("SIGHUP")
            return
        if host.engine is None:
            raise KeyboardInterrupt
        stop(signal.Signals(signum).name)
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    handled = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    try:
        run_loop(host, target)
    except KeyboardInterrupt:
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.uninstall()
    failed = host.error is not None or (host.engine is not None and host.engine.state == "error")
    if host.error is not None and host.engine is None:
        print(f"lrwatch: the loop failed before lrwatch.watch(): {host.error!r}", file=sys.stderr)
    if host.engine is not None and (host.engine.stop_reason or "").startswith("divergence"):
        return EXIT_DIVERGED
    return 1 if failed else 0


def launch(args: argparse.Namespace, run_dir: Path) -> int:
    """The run in a process of its own (``--_spawned``); this one shows the monitor, or returns (``--detach``)."""
    from lrwatch.cli_live import launch_run

    argv = list(args.raw_argv[1:])
    if args.resume is None and args.run_dir is None:
        argv = ["--run-dir", str(Path(run_dir).resolve()), *argv]
    return launch_run(args, args.command, argv, Path(run_dir).resolve())


def cmd_run(args: argparse.Namespace) -> int:
    """``lrwatch run script.py [-- args]``: the user's script, its ``lrwatch.watch()`` attached to us;
    with ``--nproc-per-node N``, N ranks under torchrun, rank 0's ``watch()`` attached to us."""
    import runpy

    from lrwatch.launch import run_ranks

    script = Path(args.script)
    if not script.is_file():
        raise UsageError(f"lrwatch run: no such script: {script}")
    script_args = list(args.script_args)
    if script_args[:1] == ["--"]:
        script_args = script_args[1:]

    def target() -> None:
        sys.argv = [str(script), *script_args]
        sys.path.insert(0, str(script.resolve().parent))
        runpy.run_path(str(script), run_name="__main__")

    _check_resumable(args.resume)
    run_dir = args.resume or args.run_dir or default_run_dir()
    if _launches(args):
        return launch(args, run_dir)
    if args.nproc_per_node is not None:
        return run_ranks(str(script), script_args, args.nproc_per_node, _rank_settings(args, run_dir))
    return run_headless(target, args, run_dir=run_dir, log="stderr")


def _rank_settings(args: argparse.Namespace, run_dir: Path) -> dict[str, str]:
    """What ``lrwatch.host.Host.from_environment`` reads in every rank."""
    return {
        "LRWATCH_RUN_DIR": str(Path(run_dir).resolve()),
        "LRWATCH_RESUME": str(Path(args.resume).resolve()) if args.resume else "",
        "LRWATCH_ON_DIVERGENCE": args.on_divergence or "",
        "LRWATCH_SPIKE_FACTOR": repr(args.spike_factor),
        "LRWATCH_ON_HANGUP": args.on_hangup,
        "LRWATCH_SPAWNED": "1" if args.spawned else "",
    }


def cmd_view(args: argparse.Namespace) -> int:
    """``lrwatch view RUN_DIR ...``: one run in the monitor, read-only; several overlaid; or a summary."""
    readers = [RunReader(path) for path in args.run_dirs]
    notes = [f"{r.name}: {note}" for r in readers for note in [*r.skipped, r.incomplete_tail()] if note]
    if args.summary:
        from lrwatch.app.compare import run_summary

        for reader in readers:
            s = run_summary(reader)
            best = f"{s['best_val_loss']:.4f}" if s["best_val_loss"] is not None else "-"
            last = f"{s['last_val_loss']:.4f}" if s["last_val_loss"] is not None else "-"
            schedules = " → ".join(s["schedules"])
            print(f"{s['name']}: {s['state']}, {s['steps']} steps, val_loss {last} (best {best}), {schedules}")
        for note in notes:
            print(f"skipped: {note}", file=sys.stderr)
        return 0
    if len(readers) == 1:
        from lrwatch.app import LRWatchApp
        from lrwatch.reader import FileRunSource

        app = LRWatchApp.read_only(FileRunSource(readers[0]), fps=args.fps, ascii_markers=args.ascii, notes=notes)
    else:
        from lrwatch.app.compare import CompareRunsApp

        app = CompareRunsApp(readers, fps=args.fps, ascii_markers=args.ascii)
    app.run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.raw_argv = list(sys.argv[1:] if argv is None else argv)
        if args.command == "run":
            return cmd_run(args)
        if args.command in ("attach", "ls", "send"):
            from lrwatch.cli_live import LIVE_COMMANDS

            return LIVE_COMMANDS[args.command](args)
        if args.command == "view":
            return cmd_view(args)
        if args.command in ("schedule", "compare"):
            if args.steps_per_epoch is None:  # smooth per-batch curves in plots; one row per epoch in data
                args.steps_per_epoch = 20 if args.format == "plot" and not args.per_epoch else 1
            return cmd_schedule(args)
        args.schedule_given = any(a == "--schedule" or a.startswith("--schedule=") for a in (argv or sys.argv[1:]))
        return cmd_demo(args)
    except (UsageError, SpecError, CheckpointError, RunDirError) as exc:
        print(str(exc) if isinstance(exc, UsageError) else f"lrwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
