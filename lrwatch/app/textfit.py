"""Text that fits its box: lines wrapped only where a reader would break them, and panels filled by
priority. No Textual here (Rich ``Text`` only).

A line breaks at a space, or after ``,`` ``(`` and the ``:`` of a spec (``cosine:T_max=40``), never inside
a word or a number: ``CosineAnnealingLR(optimizer, T_max=40, eta_min=0.001)`` at 26 columns is
``CosineAnnealingLR(`` / ``  optimizer, T_max=40,`` / ``  eta_min=0.001)``. Only a word longer than the
whole line is cut, at the line's end.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.text import Text

# Pieces a line is made of: a run of spaces, a word that ends where a break is allowed after it
# (",", "(" and a spec's ":" before a letter), or a word.
_PIECE = re.compile(r" +|[^ ]*?(?:[,(]|:(?=[A-Za-z_]))(?=[^ ])|[^ ]+")


def wrap_spans(text: str, width: int, indent: int = 2) -> list[tuple[int, int]]:
    """``(start, end)`` of each line of ``text`` wrapped at ``width`` (continuation lines take ``indent``
    columns less); the spaces at a break belong to no line."""
    width = max(width, 1)
    indent = min(indent, width // 2)
    spans: list[tuple[int, int]] = []
    start = end = None  # the current line's first and (exclusive) last non-space character
    used = 0
    for match in _PIECE.finditer(text):
        a, b = match.span()
        if text[a] == " ":
            if a == 0 and b < width:  # leading spaces are the text's own (a right-aligned number): kept
                start, end, used = 0, b, b
            continue
        room = width - (indent if spans else 0)
        gap = a - end if end is not None and end > start else 0
        if start is not None and used + gap + (b - a) <= room:
            end, used = b, used + gap + (b - a)
            continue
        if start is not None:
            spans.append((start, end))
        while b - a > width - (indent if spans else 0):  # a word longer than a line: cut it
            cut = a + width - (indent if spans else 0)
            spans.append((a, cut))
            a = cut
        start, end, used = a, b, b - a
    if start is not None:
        spans.append((start, end))
    return spans or [(0, 0)]


def wrap(text: str, width: int, indent: int = 2) -> list[str]:
    """``text`` as lines of at most ``width`` columns (see :func:`wrap_spans`)."""
    spans = wrap_spans(text, width, indent)
    return [(" " * indent if i else "") + text[a:b] for i, (a, b) in enumerate(spans)]


def wrap_text(text: Text, width: int, indent: int = 2) -> list[Text]:
    """A styled line wrapped like :func:`wrap`, each piece keeping its styles."""
    out = []
    for i, (a, b) in enumerate(wrap_spans(text.plain, width, indent)):
        piece = text[a:b]
        out.append(Text(" " * indent) + piece if i else piece)
    return out


def lines_of(items: Iterable[Text | str], width: int, indent: int = 2, style: str = "") -> list[Text]:
    """Each item wrapped to ``width``: one list of physical lines."""
    out: list[Text] = []
    for item in items:
        out += wrap_text(item if isinstance(item, Text) else Text(item, style=style), width, indent)
    return out


class Blocks:
    """A panel's content as blocks of lines, each with a priority: :meth:`fit` drops the least important
    whole blocks until the rest fits the lines there are, and keeps the shown order."""

    def __init__(self, width: int) -> None:
        self.width = width
        self._blocks: list[tuple[int, list[Text]]] = []

    def add(self, priority: int, *items: Text | str, style: str = "", indent: int = 2) -> None:
        """Lines that go (or are left out) together; higher ``priority`` stays longer."""
        self._blocks.append((priority, lines_of(items, self.width, indent, style)))

    def fit(self, height: int | None) -> list[Text]:
        blocks = list(self._blocks)
        if height is not None:
            while sum(len(lines) for _, lines in blocks) > height and len(blocks) > 1:
                lowest = min(range(len(blocks)), key=lambda i: (blocks[i][0], -i))
                del blocks[lowest]
        lines = [line for _, block in blocks for line in block]
        return lines[: max(height, 1)] if height is not None else lines


def tail_lines(entries: list[Text], width: int, height: int, indent: int = 2) -> list[Text]:
    """The newest entries that fit ``height`` lines, each wrapped to ``width``, oldest first (a log's view):
    the newest always shows (its first lines, if it alone is taller than the box)."""
    out: list[Text] = []
    for entry in reversed(entries):
        lines = wrap_text(entry, width, indent)
        if out and len(out) + len(lines) > height:
            break
        out = lines + out
    return out[: max(height, 1)]
