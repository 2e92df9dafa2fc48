"""Benchmarks: scripts that measure edgedeploy beside its peers in one run and print the figures."""
