"""Imports point down only: each module of lrwatch imports only rooms (packages, or the few top-level
modules) listed at or before its own in LAYERS, counting imports inside functions and under
``TYPE_CHECKING`` (ast, not the import system)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lrwatch"

# Bottom to top, one row a room: a package (or one of the few modules at the top of lrwatch/). A module
# may import its own room and the rooms below it. The README's design notes open with this map.
LAYERS = [
    "schedule",  # pure schedule math: the kinds, specs, the timeline (numpy only)
    "protocol",  # commands, events, RunStatus, and the line format that carries them
    "record",  # what a run leaves behind and how it is read back
    "run",  # the training process: the engine, LR control, checkpoints, DDP, the race
    "live",  # between processes: sockets, server, host, client, launcher, serve
    "api",  # lrwatch.watch
    "__init__",  # the package's public names
    "integrations",  # Lightning, the HF Trainer, lrwatch run's zero-line hooks
    "demo",  # the demo's configuration and planned schedule (no torch: the monitor draws it first)
    "demo_task",  # the demo task, written on the public API
    "charts",  # chart frames and the canvas
    "app",  # the Textual monitor
    "cli",  # the command line
]

# Rooms that must not import these third-party packages (ast-checked, imports inside functions too).
FORBIDDEN = {
    "schedule": ("torch", "textual", "rich", "plotext"),
    "protocol": ("torch", "textual", "rich", "plotext"),
    "record": ("textual",),
    "run": ("textual",),
    "live": ("textual",),
    "charts": ("textual",),
    "demo": ("torch",),
}


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


def test_lrwatch_is_a_handful_of_rooms() -> None:
    """At most six modules at the top of lrwatch/; every package says in its docstring what lives there."""
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top
    for package in sorted(p for p in PACKAGE.iterdir() if (p / "__init__.py").exists()):
        doc = ast.get_docstring(ast.parse((package / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "Imports" in doc, package


def test_rooms_keep_their_third_party_imports() -> None:
    found = []
    for module, path in modules():
        banned = FORBIDDEN.get(module.split(".")[1] if "." in module else "", ())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            found += [f"{module} imports {n}" for n in names if n.split(".")[0] in banned]
    assert found == []


def test_the_walk_sees_imports_inside_functions() -> None:
    """The checker itself can fail: an import inside a function, of a higher layer, is found."""
    sample = PACKAGE.parent / "tests" / "_layer_sample.py"
    sample.write_text("def f():\n    from lrwatch.cli import main\n", encoding="utf-8")
    try:
        assert imports_of(sample) == ["lrwatch.cli"]
    finally:
        sample.unlink()
