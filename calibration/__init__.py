"""INT8 post-training calibration on the CPU, and the data sources every stage shares.

This package is the lower layer: it never imports ``edgedeploy``. It owns the data sources
(feed-dict generators), the streaming statistics, the calibration algorithms, the Q/DQ ONNX
writer and the TensorRT calibration cache format.
"""

import os as _os

# ONNX Runtime's Linux wheels from 1.32 send usage telemetry and, on import, write a device id and
# an event database under ~/.cache/Microsoft and a ".ses" file into TMPDIR (docs/design.md,
# "Offline"). Calibration runs offline and writes only what the user names: off, unless the
# user has set the variable. 1.32 reads ORT_DISABLE_TELEMETRY; ORT_TELEMETRY_DISABLED is the
# name of ONNX Runtime's later opt-out. Set here, in the lowest package, before anything of
# ours imports onnxruntime (edgedeploy imports this package first).
for _name in ("ORT_DISABLE_TELEMETRY", "ORT_TELEMETRY_DISABLED"):
    _os.environ.setdefault(_name, "1")
