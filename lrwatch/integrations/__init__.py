"""lrwatch inside training frameworks: ``lrwatch.integrations.lightning`` (PyTorch Lightning) and
``lrwatch.integrations.transformers`` (the Hugging Face ``Trainer``).

Each is an optional extra (``pip install lrwatch[lightning]``, ``lrwatch[transformers]``) and is
imported only when named: ``import lrwatch`` never imports a framework. ``autowatch`` is ``lrwatch run``
on a script that never calls ``lrwatch.watch()``: PyTorch's global optimizer hooks.

Imports: the public API (``lrwatch``, ``lrwatch.api``) and the rooms below it.
"""
