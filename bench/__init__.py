"""Benchmarks: `make bench` prints a table; speed is never measured by a test."""
