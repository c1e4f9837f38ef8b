"""The ``lrwatch`` command line's arguments: the parser, its argument types, and the schedule they describe.

Every subcommand's options are declared here; :mod:`lrwatch.cli` runs them. A bad argument is a
:class:`UsageError`: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np

from lrwatch.schedule.base import Span
from lrwatch.schedule.spec import KINDS, ScheduleSpec, SpecError, parse_spec, parse_switch
from lrwatch.schedule.timeline import Timeline


class UsageError(Exception):
    """Bad arguments: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}".replace("\n", "\\n"))  # one line, whatever was typed


@dataclass(frozen=True)
class SwitchAt:
    when: Span  # an epoch, or a step (``Nsteps``)
    spec: ScheduleSpec

    def step(self, steps_per_epoch: int) -> int:
        return round(self.when.to_steps(steps_per_epoch))

    def __str__(self) -> str:
        return f"{self.when}:{self.spec}"


def spec_arg(text: str) -> ScheduleSpec:
    try:
        return parse_spec(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def switch_arg(text: str) -> SwitchAt:
    try:
        when, spec = parse_switch(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return SwitchAt(when, parse_spec(spec))


def switch_text(text: str) -> str:
    """``EPOCH:SPEC`` as given (whatever :func:`parse_switch` accepts), checked now; applied by ``watch()``."""
    try:
        parse_switch(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _positive(kind: type) -> callable:
    what = {int: "an integer", float: "a number"}.get(kind, kind.__name__)

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} > 0 (got {text!r})") from None
        if not (value > 0 and np.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {what} > 0 (got {text!r})")
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
        help="switch to SPEC at EPOCH (or Nsteps:SPEC; repeatable), exactly as a key press would",
    )
    p.add_argument("--lr", type=_positive(float), default=lr_default, required=lr_default is None, help="initial LR")
    p.add_argument("--epochs", type=_positive(int), default=epochs_default, help="epochs")
    p.add_argument(
        "--total-steps",
        type=_positive(int),
        default=None,
        metavar="N",
        help="the run's length in optimizer steps (instead of epochs × steps per epoch)",
    )
    p.add_argument("--per-epoch", action="store_true", help="update the LR once per epoch (default: every batch)")
    p.epilog = (f"SPEC is KIND[:key=value,...], KIND one of {kinds}; times in epochs or Nsteps, e.g. "
                "cosine:T_max=5000steps,warmup=500steps")  # fmt: skip


class _Commands(argparse.HelpFormatter):
    """The command list one line a command, its help beside it, within the terminal's width."""

    def __init__(self, prog: str) -> None:
        import shutil

        super().__init__(prog, max_help_position=14, width=min(shutil.get_terminal_size((80, 24)).columns, 100))


class _Version(argparse.Action):
    """``--version``: the installed lrwatch's version (looked up only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print lrwatch's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: object) -> NoReturn:
        from lrwatch.record.rundir import lrwatch_version

        print(f"lrwatch {lrwatch_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="lrwatch",
        usage="lrwatch COMMAND [options]   (lrwatch COMMAND -h: its options)",
        description="Watch and switch learning-rate schedules while PyTorch trains.",
        formatter_class=_Commands,
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser, metavar="COMMAND", title="commands", prog="lrwatch"
    )

    demo = sub.add_parser("demo", help="train the demo model under the live monitor (or --headless)")
    demo.add_argument("--headless", action="store_true", help="no UI: print one line per epoch")
    demo.add_argument(
        "--find-lr",
        action="store_true",
        help="with --headless: the LR range test from the initial weights (RUN_DIR/lr_find.csv); no training",
    )
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
        type=_resume_arg,
        default=None,
        metavar="RUN_DIR",
        help="continue a run from its checkpoint (or from a checkpoint file in it: a cooldown's fork); "
        "--schedule/--switch given now become new switches, --epochs/--total-steps a new length",
    )
    _add_divergence_args(demo)
    _add_live_args(demo)
    _add_ui_args(demo)

    run = sub.add_parser("run", help="your training script under the monitor (with watch() or without)")
    run.add_argument("script", help="a Python training script; one that never calls lrwatch.watch() is hooked")
    run.add_argument("--headless", action="store_true", help="no UI; lrwatch's lines go to stderr")
    run.add_argument("--run-dir", type=Path, default=None, help="default: runs/<timestamp>")
    run.add_argument(
        "--resume",
        type=_resume_arg,
        default=None,
        metavar="RUN_DIR",
        help="continue a run in its run directory (or from a checkpoint file of it), or (a script that saves its "
        "own) at the step its optimizer's state counts; --schedule/--switch given now become new switches",
    )
    run.add_argument(
        "--resume-step",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="with --resume: the step the script resumes at, when its optimizer counts none (SGD)",
    )
    run.add_argument(
        "--schedule",
        type=spec_arg,
        default=None,
        metavar="SPEC",
        help="the schedule from the first step (a script lrwatch only watches: it takes the LR over there; "
        "default: the script's own)",
    )
    run.add_argument(
        "--switch",
        type=switch_text,
        action="append",
        default=[],
        metavar="EPOCH:SPEC",
        help="switch to SPEC at EPOCH (repeatable), exactly as a key press would",
    )
    run.add_argument(
        "--nproc-per-node",
        type=_positive(int),
        default=None,
        metavar="N",
        help="DDP: start N ranks with PyTorch's torchrun (torch.distributed.run --standalone); the monitor is rank 0's",
    )
    run.add_argument(
        "--steps-per-epoch",
        type=_positive(int),
        default=None,
        help="a script without lrwatch.watch(): optimizer steps per epoch (default: len() of its DataLoader)",
    )
    run.add_argument(
        "--epochs", type=_positive(int), default=None, help="a script without lrwatch.watch(): the planned epochs"
    )
    run.add_argument(
        "--grad-norm",
        action="store_true",
        help="a script without lrwatch.watch(): log the total gradient norm of each step (grad_norm), on the device",
    )
    run.add_argument(
        "--total-steps",
        type=_positive(int),
        default=None,
        metavar="N",
        help="the run's length in optimizer steps, for a watch() that does not give it (fitted defaults need it)",
    )
    _add_divergence_args(run)
    _add_live_args(run)
    _add_ui_args(run)
    run.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script, after --")

    from lrwatch.cli.live import add_live_commands
    from lrwatch.live.serve import add_serve_command

    add_live_commands(sub)
    add_serve_command(sub)

    view = sub.add_parser("view", help="open runs read-only, following them (several: overlaid)")
    view.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    view.add_argument("--summary", action="store_true", help="print a table and what was skipped, no UI")
    _add_ui_args(view, live=False)

    export = sub.add_parser("export", help="write a run where people already look: TensorBoard")
    export.add_argument("run_dir", type=_run_dir_arg, metavar="RUN_DIR")
    export.add_argument("--tensorboard", type=Path, required=True, metavar="DIR", help="a TensorBoard log dir")
    export.add_argument("--force", action="store_true", help="replace the TensorBoard events already in DIR")

    sched = sub.add_parser("schedule", help="print or draw schedules' LRs, step by step (the preview as data)")
    sched.add_argument("spec", type=spec_arg, nargs="+", metavar="SPEC", help="one, or several to overlay")
    _add_schedule_args(sched, lr_default=None, epochs_default=None)
    _add_output_args(sched, default_format="csv")

    compare = sub.add_parser(
        "compare", help="draw schedules side by side (default: the textbook four: step, exponential, cosine, SGDR)"
    )
    compare.set_defaults(switch=[])
    compare.add_argument(
        "spec", type=spec_arg, nargs="*", metavar="SPEC", help="schedules to draw, any kind (default: the textbook 4)"
    )
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


def _add_ui_args(p: argparse.ArgumentParser, *, live: bool = True) -> None:
    p.add_argument("--fps", type=_positive(float), default=2.0, help="max redraws per second (default 2)")
    p.add_argument("--ascii", action="store_true", help="plain-character plot markers instead of braille")
    if live:
        p.add_argument(
            "--race-steps",
            type=_positive(int),
            default=None,
            metavar="N",
            help="f races candidates for N steps (default: one epoch or a tenth of the remaining run, the shorter)",
        )


def _non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a step >= 0 (got {text!r})")
    return int(text)


def _run_dir_arg(text: str) -> Path:
    from lrwatch.record.rundir import run_dir_problem

    problem = run_dir_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def _resume_arg(text: str) -> Path:
    """``--resume``: a run directory, or a checkpoint file in one (``RUN_DIR/checkpoint-fork-500.pt``)."""
    path = Path(text)
    if path.is_file():
        _run_dir_arg(str(path.parent))
        return path
    return _run_dir_arg(text)


def check_resumable(run_dir: Path | None, *, own_checkpoints: bool = False) -> None:
    """Refuse a bad checkpoint before anything starts (``CheckpointError``: one line, exit 2).
    ``own_checkpoints``: the script saves its model itself (``lrwatch run``): lrwatch's state is enough."""
    if run_dir is not None:
        from lrwatch.run.checkpoints import load_checkpoint, load_resume_state

        (load_resume_state if own_checkpoints else load_checkpoint)(run_dir)


def _add_output_args(p: argparse.ArgumentParser, *, default_format: str) -> None:
    p.add_argument("--steps-per-epoch", type=_positive(int), default=None, help="default: 1, or 20 for plots")
    p.add_argument("--format", choices=("csv", "json", "plot"), default=default_format)
    p.add_argument("--log-y", action="store_true", help="log-scale y axis (plot)")


def build_timeline(
    spec: ScheduleSpec,
    switches: Sequence[SwitchAt],
    *,
    lr: float,
    steps_per_epoch: int,
    epochs: int | None,
    per_epoch: bool,
    total_steps: int | None = None,
) -> Timeline:
    total = total_steps if total_steps is not None else steps_per_epoch * epochs
    timeline = Timeline.start(spec, lr=lr, steps_per_epoch=steps_per_epoch, total_steps=total, per_epoch=per_epoch)
    for sw in sorted(switches, key=lambda s: s.step(steps_per_epoch)):
        timeline = timeline.switch(sw.step(steps_per_epoch), sw.spec)
    return timeline


TEXTBOOK = (
    "step:step_size=10,gamma=0.5",
    "exp:gamma=0.95",
    "cosine:T_max=50",
    "cosine-restarts:T_0=10,T_mult=2",
)
