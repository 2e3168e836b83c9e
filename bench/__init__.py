"""Benchmarks (issue 7): each `python -m bench.NAME` prints a table and appends it to docs/benchmarks.md."""
