"""NVIDIA Model Optimizer lives in a venv of its own, made once by the benchmarks that compare with it.

``nvidia-modelopt[onnx]`` pulls onnxruntime-gpu beside onnxruntime, and with both installed ONNX
Runtime crashes or refuses valid models, so it is never installed into the project's environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgedeploy-bench"
MODELOPT_VENV = CACHE / "modelopt-venv"


def modelopt_python(allow_install: bool, module: str) -> tuple[str | None, str]:
    """The venv's interpreter once ``module`` imports there (creating the venv if allowed).

    Returns None and one line saying why where it cannot be had.
    """
    py = MODELOPT_VENV / "bin" / "python"
    check = [str(py), "-c", f"import {module}"]
    if py.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(py), "ok"
    if not allow_install:
        return None, f"no Model Optimizer venv at {MODELOPT_VENV} (run without --no-install to create it)"
    print(f"creating {MODELOPT_VENV} with nvidia-modelopt[onnx] (once; several GB) ...", flush=True)
    made = subprocess.run([sys.executable, "-m", "venv", str(MODELOPT_VENV)], capture_output=True, text=True)
    pip = [str(MODELOPT_VENV / "bin" / "pip"), "install", "-q", "nvidia-modelopt[onnx]"]
    installed = subprocess.run(pip, capture_output=True, text=True) if made.returncode == 0 else made
    if installed.returncode != 0 or subprocess.run(check, capture_output=True).returncode != 0:
        tail = (installed.stderr or installed.stdout).strip().splitlines()[-1:] or ["unknown error"]
        return None, f"cannot install nvidia-modelopt[onnx]: {tail[0]}"
    return str(py), "ok"


def peak_kb() -> int:
    """Peak resident memory of this process image in kB (VmHWM: unlike ru_maxrss, not inherited
    from the parent across fork and exec)."""
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))


# Model Optimizer's ONNX PTQ, int8 entropy, run by the venv's interpreter: argv model, calib.npz, out.
# Its clock and memory baseline cover what every method's do: reading the calibration data and the
# model from disk, calibrating, writing the artifact. The copy before them is the benchmark's own
# (quantize() rewrites its input file), no work of a user's.
MODELOPT_INT8 = r"""
import json, shutil, sys, tempfile, time, os
import numpy as np
from modelopt.onnx.quantization import quantize
model, calib, out = sys.argv[1:4]
work = tempfile.mkdtemp()
copy = os.path.join(work, "model.onnx")
shutil.copy(model, copy)  # quantize() rewrites its input file
def hwm():
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM:"))
baseline = hwm()
start = time.perf_counter()
data = dict(np.load(calib))
quantize(onnx_path=copy, quantize_mode="int8", calibration_data=data, calibration_method="entropy",
         calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=out, log_level="ERROR")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "peak_kb": hwm(), "baseline_kb": baseline}))
"""
