"""Benchmarks. Each writes its results (with machine details) to bench/results/<name>.json and prints them."""
