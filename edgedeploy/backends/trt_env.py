"""What this machine offers the TensorRT path: TensorRT and pycuda versions, GPU, CUDA driver, Jetson.

Every probe is guarded: ``edgedeploy doctor`` and ``--backend auto`` call these on machines with no
GPU, no TensorRT and no Jetson files, and must get an answer, never an exception. The Jetson module
comes from /proc/device-tree/model and the L4T release from /etc/nv_tegra_release (JetPack's own
files; nothing else says which board and BSP this is). tensorrt and pycuda are imported only here,
inside functions.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INSTALL_HINT = (
    "TensorRT is not usable here; on a desktop GPU install NVIDIA's TensorRT wheels and pycuda "
    "(`pip install tensorrt pycuda` on a machine that reaches NVIDIA's index), on a Jetson use "
    "JetPack's python3-libnvinfer from a venv made with `python3 -m venv --system-site-packages` "
    "(then `pip install pycuda`)"
)

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
NV_TEGRA_RELEASE = Path("/etc/nv_tegra_release")


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "8.7"
    cuda_driver: str  # "12.2"
    total_memory_mb: int


def import_tensorrt() -> Any:
    """The tensorrt module, or ImportError (OSError from a broken libnvinfer is turned into one)."""
    try:
        return importlib.import_module("tensorrt")
    except OSError as exc:  # a wheel without its shared libraries
        raise ImportError(f"tensorrt is installed but cannot load its libraries: {exc}") from exc


def import_cuda_driver() -> Any:
    """pycuda.driver, or ImportError."""
    try:
        return importlib.import_module("pycuda.driver")
    except OSError as exc:
        raise ImportError(f"pycuda is installed but cannot load libcuda: {exc}") from exc


def tensorrt_version() -> str | None:
    try:
        return str(import_tensorrt().__version__)
    except Exception:
        return None


def pycuda_version() -> str | None:
    try:
        pycuda = importlib.import_module("pycuda")
    except Exception:
        return None
    return str(getattr(pycuda, "VERSION_TEXT", None) or getattr(pycuda, "__version__", "unknown"))


def format_driver_version(code: int) -> str:
    """CUDA encodes driver versions as major*1000 + minor*10 (12040 -> "12.4")."""
    return f"{code // 1000}.{(code % 1000) // 10}"


def gpu_info(device: int = 0) -> GpuInfo:
    """Name, compute capability, driver and memory of one GPU; raises if there is none."""
    import pycuda.driver as cuda

    cuda.init()
    dev = cuda.Device(device)
    major, minor = dev.compute_capability()
    return GpuInfo(
        name=str(dev.name()),
        compute_capability=f"{major}.{minor}",
        cuda_driver=format_driver_version(int(cuda.get_driver_version())),
        total_memory_mb=int(dev.total_memory()) // (1 << 20),
    )


def free_gpu_memory_mb() -> int | None:
    """Free device memory in MB (needs a current CUDA context), or None when it cannot be read."""
    try:
        import pycuda.driver as cuda

        free, _total = cuda.mem_get_info()
        return int(free) // (1 << 20)
    except Exception:
        return None


def free_memory_mb() -> int | None:
    """Free memory for a build: the GPU's if a context answers, else MemAvailable (Jetson shares RAM)."""
    free = free_gpu_memory_mb()
    if free is not None:
        return free
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_jetson_model(path: Path | None = None) -> str | None:
    try:
        text = (path or DEVICE_TREE_MODEL).read_bytes().decode(errors="replace")
    except OSError:
        return None
    return text.replace("\x00", "").strip() or None


def read_l4t_release(path: Path | None = None) -> str | None:
    """``# R36 (release), REVISION: 4.3, GCID: ...`` -> ``36.4.3``."""
    try:
        first = (path or NV_TEGRA_RELEASE).read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        return None
    match = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", first)
    if not match:
        return None
    return f"{match.group(1)}.{match.group(2)}"


def environment() -> dict[str, str | None]:
    """Facts recorded in every engine sidecar and compared before an engine is loaded."""
    facts: dict[str, str | None] = {
        "tensorrt": tensorrt_version(),
        "gpu_name": None,
        "compute_capability": None,
        "cuda_driver": None,
        "jetson_model": read_jetson_model(),
        "l4t_release": read_l4t_release(),
    }
    try:
        info = gpu_info()
    except Exception:
        return facts
    facts.update(gpu_name=info.name, compute_capability=info.compute_capability, cuda_driver=info.cuda_driver)
    return facts


def availability() -> tuple[bool, str]:
    """Whether TensorRT, pycuda and a GPU are all present; if not, one line on what to do."""
    try:
        trt = import_tensorrt()
    except Exception as exc:
        return False, f"{INSTALL_HINT} ({type(exc).__name__}: {exc})"
    try:
        import_cuda_driver()
    except Exception:
        return False, (
            f"TensorRT {trt.__version__} is present but pycuda is not: `pip install pycuda` "
            "(on a Jetson inside the --system-site-packages venv, with nvcc on PATH)"
        )
    try:
        info = gpu_info()
    except Exception as exc:
        return (
            False,
            f"TensorRT {trt.__version__} is present but no CUDA GPU answers ({type(exc).__name__}: {exc})",
        )
    return True, f"TensorRT {trt.__version__}, {info.name} (sm_{info.compute_capability.replace('.', '')})"


def probe() -> dict[str, str | None]:
    """Everything ``edgedeploy doctor`` shows about the TensorRT path; never raises."""
    facts = environment()
    facts["pycuda"] = pycuda_version()
    ok, why = availability()
    facts["tensorrt_usable"] = "yes" if ok else "no"
    facts["problem"] = None if ok else why
    return facts


def gpu_tests_can_run() -> tuple[bool, str]:
    """Whether ``pytest -m gpu`` would run here, and why not."""
    ok, why = availability()
    if ok:
        return True, f"gpu tests can run: {why}"
    return False, f"gpu tests are skipped: {why}"
