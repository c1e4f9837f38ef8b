"""``python -m lrwatch.cli``: the command line."""

from __future__ import annotations

import sys

from lrwatch.cli.main import main

sys.exit(main())
