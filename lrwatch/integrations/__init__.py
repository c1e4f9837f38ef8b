"""lrwatch inside training frameworks: ``lrwatch.integrations.lightning`` (PyTorch Lightning) and
``lrwatch.integrations.transformers`` (the Hugging Face ``Trainer``).

Each is an optional extra (``pip install lrwatch[lightning]``, ``lrwatch[transformers]``) and is
imported only when named: ``import lrwatch`` never imports a framework.
"""
