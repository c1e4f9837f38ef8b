"""What happens in the training process: the engine that owns the LR and everything it drives.

- ``engine``: the step boundary, commands applied there, the events; mixed in: ``faststep`` (most steps'
  short way between planned boundaries), ``racehooks`` (what a race asks of it), ``ending`` (how a run ends).
- ``commands``: what waits for a step boundary (submitted and scripted commands).
- ``lrcontrol``, ``groups``: who sets the optimizer's LR, per param group, from the timeline.
- ``divergence``: is a loss diverged, snapshots for a rollback, and the run's response.
- ``checkpoints``: ``checkpoint.pt`` (``weights_only=True``), RNG states, host-memory states.
- ``losses``: GPU losses to the host without a per-step sync; ``gpu``: the GPU's readings.
- ``distributed``: DDP, the ranks agreeing on commands, stops and divergence at sync steps.
- ``race``, ``lrfind``: candidate schedules raced from one snapshot; the LR range test.
- ``monitor``: ``Monitor``, the loop's handle that ``lrwatch.watch`` returns.

Imports: ``schedule``, ``protocol``, ``record``. No Textual.
"""
