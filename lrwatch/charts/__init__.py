"""Charts as data, then as cells: used by the app and the command line.

- ``plot``: chart specs → frames (limits, ticks, labels, series); plotext's own build for the command line.
- ``canvas``: a frame drawn into terminal cells in numpy (plotext 5's drawing, cell for cell).

Imports: ``schedule``, ``protocol``, ``record``. No Textual.
"""
