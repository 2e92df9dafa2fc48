"""edgedeploy: trained network -> verified, measured deployment bundle for Jetson boards and GPUs."""

__version__ = "0.1.0"

import calibration as _calibration  # noqa: F401  (turns ONNX Runtime's telemetry off first)
