"""edgedeploy: trained network -> verified, measured deployment bundle for Jetson boards and GPUs."""

__version__ = "0.1.0"

import os as _os
import sys as _sys

# `python -m edgedeploy` puts the current folder first on sys.path, where a user's calibration.py
# (a model module, say) would replace the package of that name and fail the command with a
# traceback. While Python locates the module it runs, sys.argv[0] is "-m": only
# then is that first entry taken off, as `python -P` does and the `edgedeploy` command has it.
# A module:callable model spec still finds the user's modules (stages/export.py appends the folder).
if _sys.argv[:1] == ["-m"] and _sys.path and _sys.path[0] in ("", _os.getcwd()):
    _sys.path.pop(0)

import calibration as _calibration  # noqa: F401  (turns ONNX Runtime's telemetry off first)
