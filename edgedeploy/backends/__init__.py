"""Backends: ONNX Runtime (CPU, always present) and TensorRT (GPU, optional), behind one protocol."""

from __future__ import annotations

from edgedeploy.backends.base import Backend, BuildOptions, BuildResult
from edgedeploy.errors import BackendUnavailable, InputError
from edgedeploy.onnxio import is_onnx_path

BACKEND_NAMES = ("auto", "onnxruntime", "tensorrt")

__all__ = ["Backend", "BuildOptions", "BuildResult", "get_backend", "resolve_backend"]


def get_backend(name: str) -> Backend:
    if name == "onnxruntime":
        from edgedeploy.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    if name == "tensorrt":
        from edgedeploy.backends.tensorrt import TensorRTBackend

        return TensorRTBackend()
    raise InputError(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_NAMES)}")


def resolve_backend(name: str, target_is_gpu: bool) -> tuple[Backend, str]:
    """Pick the backend; ``auto`` takes TensorRT only where it and a GPU are present.

    Returns the backend and one line saying what was picked and why.
    """
    if name == "auto":
        if target_is_gpu:
            trt = get_backend("tensorrt")
            ok, why = trt.available()
            if ok:
                return trt, "backend auto -> tensorrt (TensorRT and a GPU are present)"
            return get_backend("onnxruntime"), f"backend auto -> onnxruntime ({why})"
        return get_backend("onnxruntime"), "backend auto -> onnxruntime (CPU target)"
    backend = get_backend(name)
    ok, why = backend.available()
    if not ok:
        raise BackendUnavailable(why)
    return backend, f"backend {name}"


ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def backend_for_artifact(path: str) -> Backend:
    """ONNX files run on ONNX Runtime; engine plans on TensorRT (which must then be present)."""
    lower = path.lower()
    if lower.endswith(ENGINE_SUFFIXES):
        backend = get_backend("tensorrt")
        ok, why = backend.available()
        if not ok:
            raise BackendUnavailable(why)
        return backend
    if is_onnx_path(path):
        return get_backend("onnxruntime")
    raise InputError(f"cannot tell how to run {path}: expected a .onnx model or a .engine plan")
