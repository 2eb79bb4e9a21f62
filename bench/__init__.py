"""Benchmarks: a corpus, a load generator, and the side-by-side comparison with peers."""
