"""Benchmarks: quality (drift alerts) and performance (worker throughput)."""
