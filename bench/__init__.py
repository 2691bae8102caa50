"""Benchmarks: corpora, the plain-Python bound, and the job measured against it.

``bench/run.py`` (``make bench``) is the entry point; results go to ``bench/RESULTS.md``.
"""
