"""Throughput and memory benchmark for forgescan: bare model loop vs the full Ray Data scan."""
