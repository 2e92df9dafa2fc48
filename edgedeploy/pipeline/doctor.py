"""``edgedeploy doctor``: what this machine has, and what to install for what is missing."""

from __future__ import annotations

import importlib
import platform
import sys
from dataclasses import dataclass

from edgedeploy.targets import cpu_flags, cpu_model, has_vnni, host_target_name


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    optional: bool = False


def _version(module: str) -> str | None:
    try:
        mod = importlib.import_module(module)
    except Exception:
        return None
    return str(getattr(mod, "__version__", "installed"))


def _installed_version(module: str, distribution: str) -> str | None:
    """The installed version of a heavy optional package, without importing it: torch and
    scikit-learn took 3-5 s of the 7 s of ``doctor``, which the device scripts' ``--tool auto``
    runs before every build and benchmark."""
    from importlib import metadata, util

    try:
        if util.find_spec(module) is None:
            return None
        return metadata.version(distribution)
    except (ImportError, ValueError, metadata.PackageNotFoundError):
        return None


def diagnose() -> list[Check]:
    checks = [
        Check("python", sys.version_info >= (3, 10), platform.python_version(), "Python >= 3.10 is needed")
    ]
    for module, hint in (
        ("onnx", "pip install onnx"),
        ("onnxruntime", "pip install onnxruntime"),
        ("polygraphy", "pip install polygraphy"),
        ("onnxslim", "pip install onnxslim"),
    ):
        version = _version(module)
        checks.append(Check(module, version is not None, version or "not installed", hint))
    torch = _installed_version("torch", "torch")
    checks.append(
        Check(
            "torch",
            torch is not None,
            torch or "not installed",
            "pip install torch==2.13.0 (CPU build; needed for export and the demo)",
            optional=True,
        )
    )
    sklearn = _installed_version("sklearn", "scikit-learn")
    checks.append(
        Check(
            "scikit-learn",
            sklearn is not None,
            sklearn or "not installed",
            "pip install scikit-learn (the demo's digits)",
            optional=True,
        )
    )
    flags = cpu_flags()
    vnni = has_vnni(flags)
    isa = (
        ", ".join(sorted(flags & {"avx2", "avx512f", "avx512_vnni", "avx_vnni", "asimddp", "fphp"}))
        or "unknown"
    )
    host = host_target_name(flags) or f"refused (no CPU target for {platform.machine()})"
    checks.append(
        Check(
            "cpu int8 (VNNI/dot-product)",
            vnni,
            f"{cpu_model()} ({platform.machine()}): {isa}; --target host is {host}",
            "without VNNI, CPU int8 artifacts use 7-bit weights (ONNX Runtime reduce-range)",
            optional=True,
        )
    )
    checks.extend(_gpu_checks())
    return checks


def _gpu_checks() -> list[Check]:
    try:
        from edgedeploy.backends.tensorrt import gpu_tests_can_run, probe
    except ImportError:
        return [Check("tensorrt", False, "backend module missing", optional=True)]
    info = probe()
    hint_trt = (
        "desktop: pip install tensorrt (NVIDIA's wheels); Jetson: JetPack's python3-libnvinfer "
        "in a venv made with --system-site-packages"
    )
    checks = [
        Check(
            "tensorrt", bool(info.get("tensorrt")), info.get("tensorrt") or "not installed", hint_trt, True
        ),
        Check(
            "pycuda",
            bool(info.get("pycuda")),
            info.get("pycuda") or "not installed",
            "pip install pycuda (needs the CUDA toolkit)",
            True,
        ),
        Check(
            "cuda driver",
            bool(info.get("cuda_driver")),
            info.get("cuda_driver") or "none found",
            "an NVIDIA driver",
            True,
        ),
        Check(
            "gpu",
            bool(info.get("gpu_name")),
            f"{info.get('gpu_name')} (compute capability {info.get('compute_capability')})"
            if info.get("gpu_name")
            else "none found",
            "",
            True,
        ),
        Check(
            "jetson",
            bool(info.get("jetson_model")),
            f"{info.get('jetson_model')} L4T {info.get('l4t_release')}"
            if info.get("jetson_model")
            else "not a Jetson",
            "",
            True,
        ),
    ]
    can_run, why = gpu_tests_can_run()
    checks.append(Check("gpu tests (pytest -m gpu)", can_run, why, "", True))
    return checks
