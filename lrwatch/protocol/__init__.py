"""The vocabulary spoken between a run and its monitors: JSON-able commands in, events and ``RunStatus``
out, and the line format that carries them over a socket or between DDP ranks.

- ``commands``: ``Switch``, ``Pause``, ``Race``, ... and their validation from the wire.
- ``events``: ``Event``, ``RunStatus``, run states, the ``RunSource`` a monitor reads.
- ``wire``: one JSON object per line, numeric columns as base64.

Imports: nothing else of lrwatch. The engine (``run``), the records, the live link and the app use it.
"""
