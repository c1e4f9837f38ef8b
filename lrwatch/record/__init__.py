"""What a run leaves behind and how it is read back.

- ``history``: the metric columns in memory (thread-safe, chunked ``columns``; the EMA).
- ``decimate``: min/max decimation of a long series (block extrema: cost rows ÷ 256).
- ``safefile``: the only owner of writes: atomic replaces, appends with a bounded backlog, errors in words.
- ``rundir``: ``metrics.csv``, ``events.jsonl``, ``run.json``: the only owner of those formats; ``csvrows``:
  the text of ``metrics.csv``'s lines (a batch of plain rows by orjson).
- ``runlog``: a run's history, run directory and event list, kept together for the engine.
- ``console``: headless lines, the one description of an event, output that survives its terminal.
- ``reader``: a run directory read back (``lrwatch view``, ``ls``, a finished run's monitor).
- ``export``: a run as TensorBoard events.

Imports: ``schedule``, ``protocol``. The engine writes through it; everything above reads it.
"""
