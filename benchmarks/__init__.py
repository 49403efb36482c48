"""Benchmarks: speed, memory, training, precision and the whole process (see BENCHMARKS.md)."""
