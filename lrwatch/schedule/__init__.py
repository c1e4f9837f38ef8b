"""Schedule math: pure closed forms of time, no torch, no Textual (numpy only).

- ``base``: what every kind shares (the ``Schedule`` protocol, parameter checks, number formatting).
- one module per family, as timm's ``scheduler/``: ``exp``, ``cosine`` (annealing and warm restarts), ``step``.
- ``spec``: ``KIND[:key=value,...]`` parsed, validated and resolved with fitted defaults.
- ``timeline``: a run's LR as immutable segments; a switch returns a new timeline.
- ``choices``: the comparison set (``v``, a race's default candidates) and "is this only continuing?".

Imports: nothing else of lrwatch. Everything above may import this.
"""
