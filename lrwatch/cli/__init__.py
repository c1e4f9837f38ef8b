"""The command line: ``lrwatch demo|run|attach|send|ls|view|serve|schedule|compare|export``.

- ``main``: the commands and ``main()`` (the ``lrwatch`` entry point, ``python -m lrwatch.cli``).
- ``args``: the parser and argument types.
- ``live``: ``attach``, ``ls``, ``send``.
- ``terminal``: the monitor as a client of its run process, and the terminal watch.

Imports: anything below (the top layer).
"""

from __future__ import annotations

from lrwatch.cli.main import main

__all__ = ["main"]
