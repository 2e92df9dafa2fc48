"""Benchmarks: scripts that measure edgedeploy beside its peers in one run and print the figures."""

# ONNX Runtime's telemetry off in every script and in the processes they start, the peers' venvs
# included (calibration/__init__.py says why)
import calibration as _calibration  # noqa: F401
