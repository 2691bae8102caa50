"""The semantics of every stage as plain Python (no Beam import).

The pipeline, the ``dry-run`` command and the benchmark bound share these functions.
"""
