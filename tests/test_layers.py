"""Imports point down only: each module of lrwatch imports only modules listed before it in LAYERS,
counting imports inside functions and under ``TYPE_CHECKING`` (ast, not the import system)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lrwatch"

# Bottom to top. The README's design notes say what each is; a new module takes its place here.
LAYERS = [
    "schedules",  # pure schedule math: numpy only
    "protocol",  # commands and events, JSON-able
    "wire",  # the socket's line format
    "timeline",  # immutable segments
    "groups",  # the optimizer's LR per param group, from the timeline
    "lrcontrol",  # who sets the optimizer's LR: lrwatch, the loop's scheduler, or one then the other
    "history",  # metric columns
    "rundir",  # metrics.csv, events.jsonl, run.json: written and parsed here only
    "runlog",  # a run's history, run directory and events, kept together
    "sockets",  # the per-user socket directory and live records
    "console",  # headless lines, output that survives its terminal
    "divergence",  # is a loss diverged; snapshots for a rollback
    "checkpoints",  # checkpoint.pt: saved and loaded (weights_only), RNG states, weight snapshots
    "lrfind",  # the LR range test, from a snapshot restored afterwards
    "gpu",  # the GPU in the run panel: torch.cuda and NVML, sampled off the training thread
    "commands",  # what waits for a step boundary: submitted and scripted commands
    "engine",  # owns the LR, applies commands at step boundaries
    "distributed",  # DDP: ranks agree on commands, stops and divergence at sync steps
    "losses",  # GPU losses copied to the host without a per-step synchronisation
    "race",  # race candidate schedules from one snapshot of the run
    "server",  # the run's socket
    "host",  # where a watched run goes: headless lines, the socket; run_loop
    "api",  # lrwatch.watch, Monitor
    "__init__",  # the package's public names (re-exported from api)
    "integrations",  # Lightning and Hugging Face Trainer callbacks, on the public API (optional extras)
    "autowatch",  # lrwatch run on a script without watch(): PyTorch's global optimizer hooks
    "reader",  # run directories read back
    "export",  # a run directory as TensorBoard events
    "client",  # a live run over its socket
    "demo",  # the demo task, written on the public API
    "canvas",  # chart cells: plotext 5's drawing in numpy
    "plot",  # chart specs → frames; plotext's own build for the command line
    "app",  # the Textual monitor (one layer: its modules import each other)
    "launch",  # the run process and the terminal watch
    "cli_live",  # attach, ls, send
    "serve",  # the monitor in a browser (textual-serve)
    "cli_args",  # the command line's parser and argument types
    "cli",
]


def layer_of(module: str) -> int:
    """``lrwatch.app.widgets`` → the index of ``app``; ``lrwatch`` → ``__init__``."""
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else "__init__"
    return LAYERS.index(name)


def imports_of(path: Path) -> list[str]:
    """Every ``lrwatch`` module this file imports, anywhere in it (``from lrwatch import x`` → ``lrwatch.x``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.split(".")[0] == "lrwatch"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; lrwatch imports absolutely"
            if node.module == "lrwatch":
                found += [f"lrwatch.{a.name}" if _is_module(a.name) else "lrwatch" for a in node.names]
            elif node.module and node.module.split(".")[0] == "lrwatch":
                found.append(node.module)
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 2:
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def test_every_module_has_a_layer() -> None:
    for module, _ in modules():
        assert layer_of(module) >= 0, module


def test_imports_point_down_only() -> None:
    upward = []
    for module, path in modules():
        own = layer_of(module)
        for target in imports_of(path):
            if target == "lrwatch" and module != "lrwatch.__init__":
                target_layer = LAYERS.index("__init__")
            else:
                target_layer = layer_of(target)
            if target_layer > own:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_the_walk_sees_imports_inside_functions() -> None:
    """The checker itself can fail: an import inside a function, of a higher layer, is found."""
    sample = PACKAGE.parent / "tests" / "_layer_sample.py"
    sample.write_text("def f():\n    from lrwatch.cli import main\n", encoding="utf-8")
    try:
        assert imports_of(sample) == ["lrwatch.cli"]
    finally:
        sample.unlink()
