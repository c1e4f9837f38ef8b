"""What the run and schedule panels say, as lines that fit their width (no Textual here).

The schedule panel is filled by priority (:class:`~lrwatch.app.textfit.Blocks`): at 80×24 the spec, its
origin and the candidates shown stay, and the PyTorch line or the anchor give way first, so the events
panel below always keeps its lines.
"""

from __future__ import annotations

import math
from typing import Any

from rich.text import Text

from lrwatch.app.candidates import Candidates
from lrwatch.app.charts import candidate_color
from lrwatch.app.textfit import Blocks, lines_of
from lrwatch.app.widgets import STATE_STYLES, format_duration, progress_bar
from lrwatch.charts.plot import color_hex
from lrwatch.protocol.commands import MONITOR_ONLY, TAKE_OVER
from lrwatch.protocol.events import RunStatus
from lrwatch.run.gpu import gpu_lines
from lrwatch.schedule.choices import after_cycle
from lrwatch.schedule.timeline import Timeline

TORCH_STYLE = "#8fbcbb"
NOTE_STYLE = "yellow"


def where(step: int, steps_per_epoch: int, epochs_known: bool) -> str:
    """``epoch 8`` or, on a run without epochs, ``step 320``."""
    return f"epoch {step / steps_per_epoch:.4g}" if epochs_known else f"step {step:,}"


def race_line(race: dict[str, Any]) -> Text:
    """``race 1: 2/5 exp 120/468 · ETA 0:42 · esc cancels``: a race under way."""
    if race.get("phase") != "training":
        return Text(f"race {race['race']}: results ready, waiting for a choice", style="bold #e0a000")
    at = f"{race['index'] + 1}/{race['n']} {race['name']} {race['step']}/{race['horizon']}"
    eta = format_duration(race["eta"])
    return Text(f"race {race['race']}: {at} · ETA {eta} · esc cancels", style="bold #e0a000")


def status_lines(
    status: RunStatus, *, rate: float, device: str, last: dict[str, float], val: dict[str, Any], width: int
) -> list[Text]:
    """The run panel: state and device, where in the run, progress, rate and ETA, LR and loss, validation,
    the run directory (cut at its end: a path is read from its start)."""
    label, style = STATE_STYLES.get(status.state, (status.state, ""))
    step, total, k = status.step, status.total_steps, status.steps_per_epoch
    at = device or status.device or ""
    if status.ranks > 1:
        at = f"{at} · rank 0 of {status.ranks}" if at else f"rank 0 of {status.ranks}"
    lines = [Text.assemble((label, style), "  ", (at, "dim"))]
    lines += [Text(line, style="dim") for line in gpu_lines(status.gpu)]
    if status.epochs_known:
        epochs = f"{total / k:g}" if total else "?"
        lines.append(Text(f"epoch {step / k:.1f}/{epochs} · step {step:,}"))
    else:
        lines.append(Text(f"step {step:,}" + (f"/{total:,}" if total else "")))
    if total:
        lines.append(progress_bar(step / total, max(width - 5, 1)) + Text(f" {100 * step / total:3.0f}%"))
    eta = (total - step) / rate if total and rate > 0 else float("nan")
    lines.append(Text(f"{rate:,.0f} steps/s  ETA {format_duration(eta)}" if status.state == "running" else ""))
    loss = last.get("loss", math.nan)
    lines.append(Text(f"lr {status.lr:.4g}  loss {loss:.4f}" if math.isfinite(loss) else f"lr {status.lr:.4g}"))
    if status.race:
        lines.append(race_line(status.race))
    if len(val.get("val_loss", ())):
        acc = val.get("val_acc")
        acc_text = f"  acc {100 * acc[-1]:.1f}%" if acc is not None and len(acc) and math.isfinite(acc[-1]) else ""
        lines.append(Text(f"val {val['val_loss'][-1]:.4f}{acc_text}"))
    out = lines_of(lines, width)
    if status.run_dir:
        out.append(Text(status.run_dir, style="dim", overflow="ellipsis", no_wrap=True))
    return out


_NOTES: dict[tuple[int, int, bool], tuple[Timeline, str | None]] = {}


def cycle_note(timeline: Timeline, start: int, epochs_known: bool) -> str | None:
    """One line on what a schedule does after its cycle, when that comes before the run's end
    (:func:`~lrwatch.schedule.choices.after_cycle`); None when it lasts the run. Kept per timeline: the
    panel asks every frame, the answer changes only with the timeline."""
    key = (id(timeline), start, epochs_known)
    cached = _NOTES.get(key)
    if cached is not None and cached[0] is timeline:
        return cached[1]
    if len(_NOTES) > 32:
        _NOTES.clear()
    note = _cycle_note(timeline, start, epochs_known)
    _NOTES[key] = (timeline, note)
    return note


def _cycle_note(timeline: Timeline, start: int, epochs_known: bool) -> str | None:
    found = after_cycle(timeline, start, timeline.total_steps)
    if found is None:
        return None
    what, step, lr = found
    at = where(step, timeline.steps_per_epoch, epochs_known)
    if what == "rises":
        return f"its cycle ends at {at}: the LR then rises again (as PyTorch's does)"
    return f"its decay ends at {at}: the LR then stays at {lr:.3g} to the end"


def schedule_lines(
    status: RunStatus, timeline: Timeline, *, anchor: str, candidates: Candidates, width: int, height: int | None
) -> list[Text]:
    """The schedule panel: the active spec, its origin and LR, its PyTorch line and what follows its cycle,
    the next switch's anchor, the candidates shown (the one ``enter`` applies marked ▸) and the marked one's
    cycle note. At most ``height`` lines, the least important left out first."""
    seg = timeline.segment_at(status.step)
    script = timeline.script if timeline.is_script(seg) else None
    if not status.drives_lr and script is None:  # a script's own schedule is shown, live or in a view
        return lines_of([Text(TAKE_OVER if status.takes_over else MONITOR_ONLY, style=NOTE_STYLE)], width)
    k, known = timeline.steps_per_epoch, status.epochs_known
    blocks = Blocks(width)
    blocks.add(100, Text(timeline.label_of(seg), style="bold"))
    if script is not None:
        if script_lines(blocks, script, timeline, status.step, keys=status.takes_over):
            return _candidate_lines(blocks, status, anchor, candidates, known, height)
    if seg.origin_step != seg.start_step:  # an edit keeps the origin: say both
        since = f"origin {where(seg.origin_step, k, known)} (edited at {where(seg.start_step, k, known)})"
    else:
        since = f"since {where(seg.origin_step, k, known)}" if seg.origin_step else "from the start"
    blocks.add(90, f"{since} · lr {seg.base_lr:.4g}", style="dim")
    if timeline.total_steps is None:  # the preview cannot know where the run ends
        blocks.add(85, "length unknown: a fitted switch asks for it", style=NOTE_STYLE)
    if seg.schedule.kind == "plateau":  # its reductions depend on the metric: the preview cannot know them
        blocks.add(80, f"flat ahead: drops follow {seg.schedule.params()['metric']}", style=NOTE_STYLE)
    elif seg.end_step is not None:
        blocks.add(80, f"the run ends at step {seg.end_step:,}", style=NOTE_STYLE)
    blocks.add(40, seg.schedule.torch_line(), style=TORCH_STYLE)
    note = cycle_note(timeline, seg.origin_step, known)
    if note:
        blocks.add(60, f"⚠ {note}", style=NOTE_STYLE)
    return _candidate_lines(blocks, status, anchor, candidates, known, height)


def script_lines(blocks: Blocks, script: Any, timeline: Timeline, step: int, *, keys: bool = True) -> bool:
    """The script's own schedule, in force until a switch: whose it is and (``keys``: a live run's) what a key
    does to it. ``True`` when that is all (observed, set by hand: no spec to say more of)."""
    k = timeline.steps_per_epoch
    if script.how == "mapped":
        cadence = script.cadence(k if not timeline.steps_only else 0) or "not seen stepping yet: nothing ahead"
        blocks.add(95, f"the script's {script.source}, {cadence}", style="dim")
        if keys:
            blocks.add(55, "a switch or an edit hands the LR to lrwatch", style=NOTE_STYLE)
        return False
    if script.how == "observed":
        ahead = (script.horizon or 0) - step
        what = f"{ahead:,} steps ahead, stepped on a copy" if ahead > 0 else "nothing ahead yet"
        blocks.add(95, f"{what}; {script.cadence(k if not timeline.steps_only else 0)}".rstrip("; "), style="dim")
    else:
        blocks.add(95, "param_group['lr'] by hand: nothing ahead", style="dim")
    if keys:
        blocks.add(90, "a switch (e c r s, :) replaces it; edits need a switch first", style=NOTE_STYLE)
    return True


def _candidate_lines(
    blocks: Blocks, status: RunStatus, anchor: str, candidates: Candidates, known: bool, height: int | None
) -> list[Text]:
    """The next switch's anchor, the candidates shown (the one ``enter`` applies marked ▸), its cycle note."""
    blocks.add(
        30, Text.assemble("next switch: ", ("restart from initial LR" if anchor == "base" else "continue", "bold"))
    )
    for slot, kind in enumerate(candidates.kinds()):
        mark = "▸" if kind == candidates.marked else " "
        swatch = (f"{mark}━ {slot + 1} ", color_hex(candidate_color(slot)))
        blocks.add(80, Text.assemble(swatch, candidates.resolved(kind)), indent=5)
    if candidates:
        several = len(candidates) > 1
        hints = [f"enter applies ▸{' · 1-4 marks' if several else ''} · esc clears", "enter applies ▸ · 1-4 marks"]
        blocks.add(70, next((h for h in hints if len(h) <= blocks.width), "enter applies ▸"), style="dim")
        marked = candidates.marked
        note = cycle_note(candidates.timelines[marked], status.step, known) if marked else None
        if note:
            blocks.add(50, f"⚠ ▸ {note}", style=NOTE_STYLE)
    return blocks.fit(height)
