"""Bundled sample data and its generator (importable by tests and benchmarks)."""
