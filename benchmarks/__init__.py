"""Benchmarks of wce's losses against their peers: ``python -m benchmarks``.

Time ratios and memory are measured against a peer in the same run (see
benchmarks/README.md); cases live in a registry (:mod:`benchmarks.registry`).
"""
