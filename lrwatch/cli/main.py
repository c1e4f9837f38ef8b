"""``lrwatch`` command line: runs the subcommands (``demo``, ``run``, ``view``, ``schedule``, ``compare``;
``attach``, ``ls`` and ``send`` are in :mod:`lrwatch.cli.live`) that :mod:`lrwatch.cli.args` parses."""

from __future__ import annotations

import _thread
import argparse
import csv
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrwatch.cli.args import TEXTBOOK, UsageError, build_parser, build_timeline, check_resumable
from lrwatch.record.reader import RunDirError, RunReader
from lrwatch.record.rundir import default_run_dir
from lrwatch.run.checkpoints import CheckpointError, run_dir_of
from lrwatch.schedule.spec import SpecError, parse_spec

EXIT_USAGE = 2
EXIT_DIVERGED = 3


def cmd_schedule(args: argparse.Namespace) -> int:
    """Print or draw one schedule, or overlay several (``lrwatch compare`` draws the textbook four)."""
    if args.switch and len(args.spec) > 1:
        raise UsageError(f"lrwatch {args.command}: --switch applies to a single SPEC (got {len(args.spec)})")
    if args.epochs is None and getattr(args, "total_steps", None) is None:
        raise UsageError(f"lrwatch {args.command}: give the run's length: --epochs N or --total-steps N")
    timelines = [
        build_timeline(
            spec,
            args.switch,
            lr=args.lr,
            steps_per_epoch=args.steps_per_epoch,
            epochs=args.epochs,
            per_epoch=args.per_epoch,
            total_steps=getattr(args, "total_steps", None),
        )
        for spec in args.spec
    ]
    names = [str(t.segments[0].spec) for t in timelines]
    steps = np.arange(max(t.total_steps for t in timelines))  # a cooldown ends its run early
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
        from lrwatch.charts.plot import color_wanted, legend_line, terminal_size, text_chart

        color = color_wanted(out)
        width, height = terminal_size()
        height -= len(names) if len(names) > 1 else 0  # room for the legend below
        length = f"{args.epochs} epochs" if args.epochs is not None else f"{timelines[0].total_steps} steps"
        title = f"learning rate · lr {args.lr:g} · {length}"
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
                text = f"{name:<34} {t.segments[0].schedule.torch_line()}"
                if len(text) > width - 3:  # one line each, or the chart's title scrolls off the screen
                    text = text[: width - 4] + "…"
                out.write(legend_line(i, text, color=color) + "\n")
    return 0


def _launches(args: argparse.Namespace) -> bool:
    """Whether this command starts the run as a process of its own (the UI, ``--detach``)."""
    return not args.spawned and (args.detach or not args.headless)


def cmd_demo(args: argparse.Namespace) -> int:
    check_resumable(args.resume)
    run_dir = run_dir_of(args.resume) if args.resume else args.run_dir or default_run_dir()
    if args.find_lr and not args.headless:
        raise UsageError("lrwatch demo: --find-lr runs without the monitor: add --headless")
    if _launches(args):  # the run process builds the task: this one need not import torch
        return launch(args, run_dir)
    fields = {
        "epochs": args.epochs,
        "steps_per_epoch": args.steps_per_epoch,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "schedule": str(args.schedule),
        "switches": tuple(str(sw) for sw in args.switch),
        "per_epoch": args.per_epoch,
        "checkpoint_every": args.checkpoint_every,
        "total_steps": args.total_steps,
    }

    def build() -> Any:
        from lrwatch.demo_task import DemoConfig, DemoTask

        config = fields
        if args.resume is not None:
            # The data, model and run length come from the run being resumed; a --schedule or --switch
            # given now is applied as a new switch (see lrwatch.watch).
            # A length given now (--epochs, --total-steps) is a longer plan: a cooldown's fork trains on.
            given = {name for name in ("epochs", "total_steps") if _given(args, "--" + name.replace("_", "-"))}
            config = DemoConfig.from_run_dir(run_dir).as_fields() | {
                "schedule": str(args.schedule) if args.schedule_given else None,
                "switches": fields["switches"],
                "checkpoint_every": args.checkpoint_every,
                **{name: fields[name] for name in given},
            }
        try:
            return DemoTask(DemoConfig(**config, device=args.device))
        except ValueError as exc:
            raise UsageError(f"lrwatch demo: {exc}") from None

    if args.find_lr:
        from lrwatch.record.console import lr_text

        steepest, tenth = build().find_lr(run_dir)
        print(f"suggested lr {lr_text(steepest)} (steepest), {lr_text(tenth)} (min/10); {run_dir}/lr_find.csv")
        return 0

    def train() -> None:  # under the host, whose socket is served already: the data is built meanwhile
        task = build()
        if not args.spawned:
            cfg = task.config
            print(f"lrwatch demo: {cfg.epochs} epochs × {cfg.steps} steps on {task.device}, run dir {run_dir}")
        task.train()

    return run_headless(train, args, run_dir=run_dir)


def _given(args: argparse.Namespace, flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args.raw_argv)


def _divergence_args(args: argparse.Namespace) -> dict:
    return {"on_divergence": args.on_divergence, "spike_factor": args.spike_factor}


def _schedule_args(args: argparse.Namespace) -> dict:
    """``lrwatch run --schedule/--switch``: for the script's ``watch()``, or the hooks' (the demo has its own)."""
    if args.command != "run":
        return {}
    return {"schedule": str(args.schedule) if args.schedule is not None else None, "switches": tuple(args.switch)}


def run_headless(target, args: argparse.Namespace, *, run_dir, log: str = "stdout") -> int:
    """Run ``target`` in this process, no UI. Ctrl+C and SIGTERM stop it at a step boundary (a second
    Ctrl+C at once). A hangup moves the output to ``RUN_DIR/lrwatch.log`` and training goes on
    (``--on-hangup stop``: it stops, as SIGTERM does). A spawned run (its own session) has no terminal."""
    from lrwatch.live.host import Host, run_loop
    from lrwatch.protocol.commands import Stop
    from lrwatch.protocol.events import LIVE_STATES
    from lrwatch.record.console import LOG_NAME, Console
    from lrwatch.run.signals import STOP_SIGNALS, ExitGuard, signal_name

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
        total_steps=getattr(args, "total_steps", None),
        **_divergence_args(args),
        **_schedule_args(args),
    )
    early_stop: list[str] = []  # a stop sent before the first step: the script is interrupted, as by Ctrl+C

    def stop(reason: str) -> None:
        if host.engine is not None and host.engine.state in LIVE_STATES:
            host.engine.submit(Stop(reason=reason))

    def on_signal(signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            if stop_on_hangup:
                guard.signalled()
                stop("SIGHUP")
            console.terminal_lost("SIGHUP")
            return
        if host.engine is None:  # still building the run (importing torch, the data): it ends here, cleanly
            early_stop.append(signal.Signals(signum).name)
            raise KeyboardInterrupt
        if not early_stop:
            guard.signalled()  # the process exits within seconds of the flush, whatever its clients do
        stop(early_stop[0] if early_stop else signal_name(signum))
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt(reason: str) -> None:  # the server's thread: the main thread runs on_signal
        early_stop.append(reason)
        _thread.interrupt_main(signal.SIGTERM)

    guard = host.exit_guard = ExitGuard()
    handled = (*STOP_SIGNALS, signal.SIGHUP)
    previous = {sig: signal.signal(sig, on_signal) for sig in handled}
    host.serve_early(interrupt)  # listed and steerable before the script's first optimizer step
    try:
        run_loop(host, target)
    except KeyboardInterrupt:
        if early_stop and host.engine is None:
            print(f"lrwatch: stopped ({early_stop[0]}) before the first optimizer step", file=sys.stderr)
            return 0
        return 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        console.uninstall()
    if isinstance(host.error, (UsageError, CheckpointError)) and host.engine is None:
        raise host.error  # the run's own arguments (a --resume that cannot go on), found bad while it was built
    failed = host.error is not None or (host.engine is not None and host.engine.state == "error")
    if host.error is not None and host.engine is None:
        print(f"lrwatch: the loop failed before its first step: {host.error!r}", file=sys.stderr)
    if host.engine is not None and (host.engine.stop_reason or "").startswith("divergence"):
        return EXIT_DIVERGED
    return 1 if failed else 0


def launch(args: argparse.Namespace, run_dir: Path) -> int:
    """The run in a process of its own (``--_spawned``); this one shows the monitor, or returns (``--detach``)."""
    from lrwatch.cli.live import launch_run

    argv = list(args.raw_argv[1:])
    if args.resume is None and args.run_dir is None:
        argv = ["--run-dir", str(Path(run_dir).resolve()), *argv]
    return launch_run(args, args.command, argv, Path(run_dir).resolve(), _planned(args))


def _planned(args: argparse.Namespace) -> Any:
    """The timeline a new demo starts from (no torch needed), drawn before its run answers; None otherwise
    (a script's schedule is the script's, a resumed run's is in its checkpoint)."""
    if args.command != "demo" or args.resume is not None or args.detach:
        return None
    from lrwatch.demo import DemoConfig, planned_timeline
    from lrwatch.schedule.spec import SpecError

    try:
        config = DemoConfig(
            epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size, lr=args.lr,
            schedule=str(args.schedule), switches=tuple(str(sw) for sw in args.switch), per_epoch=args.per_epoch,
            total_steps=args.total_steps,
        )  # fmt: skip
        return planned_timeline(config)
    except (SpecError, ValueError):
        return None  # the run will say what is wrong with it


def cmd_run(args: argparse.Namespace) -> int:
    """``lrwatch run script.py [-- args]``: the user's script, its ``lrwatch.watch()`` attached to us;
    with ``--nproc-per-node N``, N ranks under torchrun, rank 0's ``watch()`` attached to us."""
    import runpy

    script = Path(args.script)
    if not script.is_file():
        raise UsageError(f"lrwatch run: no such script: {script}")
    script_args = list(args.script_args)
    if script_args[:1] == ["--"]:
        script_args = script_args[1:]

    def target() -> None:
        from lrwatch.integrations.autowatch import AutoWatch  # torch: imported once the socket is served

        sys.argv = [str(script), *script_args]
        sys.path.insert(0, str(script.resolve().parent))
        hooks = AutoWatch(
            steps_per_epoch=args.steps_per_epoch,
            epochs=args.epochs,
            resume=args.resume,
            resume_step=args.resume_step,
            grad_norm=args.grad_norm,
        )
        with hooks:  # a script without watch(): watched from its first optimizer step
            runpy.run_path(str(script), run_name="__main__")

    if args.resume_step is not None and args.resume is None:
        raise UsageError("lrwatch run: --resume-step goes with --resume RUN_DIR")
    check_resumable(args.resume, own_checkpoints=True)
    run_dir = run_dir_of(args.resume) if args.resume else args.run_dir or default_run_dir()
    if _launches(args):
        return launch(args, run_dir)
    if args.nproc_per_node is not None:
        from lrwatch.live.launch import run_ranks

        return run_ranks(str(script), script_args, args.nproc_per_node, _rank_settings(args, run_dir))
    return run_headless(target, args, run_dir=run_dir, log="stderr")


def _rank_settings(args: argparse.Namespace, run_dir: Path) -> dict[str, str]:
    """What ``lrwatch.live.host.Host.from_environment`` reads in every rank."""
    return {
        "LRWATCH_RUN_DIR": str(Path(run_dir).resolve()),
        "LRWATCH_RESUME": str(Path(args.resume).resolve()) if args.resume else "",
        "LRWATCH_ON_DIVERGENCE": args.on_divergence or "",
        "LRWATCH_SPIKE_FACTOR": repr(args.spike_factor),
        "LRWATCH_ON_HANGUP": args.on_hangup,
        "LRWATCH_SPAWNED": "1" if args.spawned else "",
        "LRWATCH_SCHEDULE": str(args.schedule) if args.schedule is not None else "",
        "LRWATCH_SWITCHES": "\n".join(args.switch),
        "LRWATCH_TOTAL_STEPS": str(args.total_steps or ""),
    }


def cmd_view(args: argparse.Namespace) -> int:
    """``lrwatch view RUN_DIR ...``: one run in the monitor, read-only; several overlaid; or a summary."""
    from lrwatch.live.sockets import run_alive
    from lrwatch.live.starting import wait_until_started

    for path in args.run_dirs:  # a run still before its first optimizer step: said, and waited for
        if not wait_until_started(path, lambda text: print(f"lrwatch view: {text}", file=sys.stderr, flush=True)):
            raise RunDirError(f"{path}: the run ended before its first optimizer step; nothing to view")
    readers = [RunReader(path, alive=lambda path=path: run_alive(path)) for path in args.run_dirs]
    notes = [f"{r.name}: {note}" for r in readers for note in [*r.skipped, r.incomplete_tail()] if note]
    if args.summary:
        from lrwatch.app.compare import run_summary

        for reader in readers:
            s = run_summary(reader)
            best = f"{s['best_val_loss']:.4f}" if s["best_val_loss"] is not None else "-"
            last = f"{s['last_val_loss']:.4f}" if s["last_val_loss"] is not None else "-"
            schedules = " → ".join(s["schedules"])
            print(f"{s['name']}: {reader.state_text()}, {s['steps']} steps, val_loss {last} (best {best}), {schedules}")
        for note in notes:
            print(f"skipped: {note}", file=sys.stderr)
        return 0
    if len(readers) == 1:
        from lrwatch.app import LRWatchApp
        from lrwatch.record.reader import FileRunSource

        app = LRWatchApp.read_only(FileRunSource(readers[0]), fps=args.fps, ascii_markers=args.ascii, notes=notes)
    else:
        from lrwatch.app.compare import CompareRunsApp

        app = CompareRunsApp(readers, fps=args.fps, ascii_markers=args.ascii)
    app.run()
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """``lrwatch export RUN_DIR --tensorboard DIR``: the run as TensorBoard scalars and text."""
    from lrwatch.record.export import ExportError, earlier_events, export_tensorboard

    earlier = earlier_events(args.tensorboard)
    if earlier and not args.force:
        print(f"lrwatch export: {args.tensorboard} already holds TensorBoard events ({len(earlier)} file(s), "
              "an earlier export?): --force replaces them", file=sys.stderr)  # fmt: skip
        return EXIT_USAGE
    for path in earlier:
        path.unlink()  # a link is removed, never followed
    try:
        counts = export_tensorboard(args.run_dir, args.tensorboard)
    except ExportError as exc:
        print(f"lrwatch export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    written = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n or kind != "metrics")
    print(f"lrwatch export: {args.run_dir} → {args.tensorboard} ({written}); tensorboard --logdir {args.tensorboard}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # a bare `lrwatch`: what it can do
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
        args.raw_argv = list(sys.argv[1:] if argv is None else argv)
        if args.command == "run":
            return cmd_run(args)
        if args.command == "serve":
            from lrwatch.live.serve import cmd_serve

            return cmd_serve(args)
        if args.command in ("attach", "ls", "send"):
            from lrwatch.cli.live import LIVE_COMMANDS

            return LIVE_COMMANDS[args.command](args)
        if args.command == "view":
            return cmd_view(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "compare" and not args.spec:
            args.spec = [parse_spec(text) for text in TEXTBOOK]
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
