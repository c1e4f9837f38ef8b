"""Between processes: the run's socket and who talks to it.

- ``sockets``: the per-user socket directory and the live records (``live.json``).
- ``server``: the run's socket server (in the training process, its own thread).
- ``host``: where a watched run goes: its headless lines and its server; ``run_loop``.
- ``client``: a live run over its socket (``RemoteRunSource``).
- ``launch``: the run process started for a monitor, torchrun's ranks.
- ``serve``: the monitor in a browser tab (textual-serve).

Imports: ``schedule``, ``protocol``, ``record``, ``run``. No Textual.
"""
