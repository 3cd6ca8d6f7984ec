"""Benchmarks that write reports to benchmarks/reports/ (run from the repository root)."""
