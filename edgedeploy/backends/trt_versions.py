"""Which TensorRT release has which build option, checked before any work (no AttributeError reaches users).

Each option maps to the TensorRT API items it needs (an enum member such as
``MemoryPoolType.TACTIC_SHARED_MEMORY`` or an attribute such as
``IBuilderConfig.builder_optimization_level``). Which releases bind each item is data generated from
TensorRT's own pybind11 sources (trt_api_presence.py, made by tools/trt_stubs/derive_presence.py from
tests/data/trt-python-api.json), not typed by hand: the refusal names the first release that has
it, or the release that removed it. A version between two sampled releases is judged by the nearest
older sample (10.8 by 10.7). DLA is the one exception, because the bindings keep
``DeviceType.DLA`` where NVIDIA ships no DLA support; its rule is NVIDIA's release notes
(docs/tensorrt-facts.md). Pure Python: no tensorrt import.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from edgedeploy.backends.trt_api_presence import PRESENT, RELEASES
from edgedeploy.errors import InputError

# Every API item an option below needs; derive_presence.py lists their releases.
API_ITEMS: tuple[str, ...] = (
    "MemoryPoolType.WORKSPACE",
    "MemoryPoolType.TACTIC_SHARED_MEMORY",
    "MemoryPoolType.DLA_MANAGED_SRAM",
    "MemoryPoolType.DLA_LOCAL_DRAM",
    "MemoryPoolType.DLA_GLOBAL_DRAM",
    "MemoryPoolType.TACTIC_DRAM",
    "HardwareCompatibilityLevel.AMPERE_PLUS",
    "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY",
    "IBuilderConfig.builder_optimization_level",
    "IBuilderConfig.hardware_compatibility_level",
    "BuilderFlag.VERSION_COMPATIBLE",
    "IBuilderConfig.DLA_core",
    "DeviceType.DLA",
    "BuilderFlag.GPU_FALLBACK",
    "BuilderFlag.FP16",
    "BuilderFlag.INT8",
    "BuilderFlag.BF16",
    "BuilderFlag.FP8",
    "DataType.BF16",
    "DataType.FP8",
    "IBuilderConfig.int8_calibrator",
    "ILayer.precision",
    "ILayer.set_output_type",
    "BuilderFlag.OBEY_PRECISION_CONSTRAINTS",
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
    "OnnxParserFlag.NATIVE_INSTANCENORM",
    "Runtime.engine_host_code_allowed",
    "Runtime.DLA_core",
    "BuilderFlag.TF32",
    "IBuilderConfig.profiling_verbosity",
    "ProfilingVerbosity.DETAILED",
    "ProfilingVerbosity.LAYER_NAMES_ONLY",
    "ProfilingVerbosity.NONE",
)

# DLA, from NVIDIA's notes (docs/tensorrt-facts.md): "TensorRT 10.7 was the last 10.x release that
# supported DLA"; "DLA was unavailable in TensorRT 11.0 through 11.3"; 11.4.0 only on Windows on ARM;
# 11.4.1 on Jetson AGX Orin with JetPack 7.2.2 or later.
DLA_LAST_10X = (10, 7)
DLA_BACK_IN_11 = (11, 4, 1)


@dataclass(frozen=True, order=True)
class TrtVersion:
    major: int
    minor: int
    patch: int = 0

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        match = re.match(r"^\s*(\d+)\.(\d+)(?:\.(\d+))?", text)
        if not match:
            raise InputError(f"cannot read TensorRT version '{text}'")
        return cls(int(match.group(1)), int(match.group(2)), int(match.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    @property
    def cache_code(self) -> int:
        """The number in a calibration cache header: 8.6.1 -> 8601, 10.3.0 -> 100300."""
        if self.major < 10:
            return self.major * 1000 + self.minor * 100 + self.patch
        return self.major * 10000 + self.minor * 100 + self.patch


def _short(release: str) -> str:
    return ".".join(release.split(".")[:2])


def reference_release(version: TrtVersion) -> str | None:
    """The sampled release that stands for ``version``: the newest with the same or an older major.minor."""
    older = [r for r in RELEASES if tuple(int(p) for p in r.split(".")[:2]) <= (version.major, version.minor)]
    return older[-1] if older else None


def has(item: str, version: TrtVersion) -> bool:
    reference = reference_release(version)
    return reference is not None and reference in PRESENT[item]


def why_missing(item: str, version: TrtVersion) -> str:
    """'needs TensorRT 10.0 or newer' or 'was removed in TensorRT 11.0' for an item ``version`` lacks."""
    present = PRESENT[item]
    if not present:
        return "is in no TensorRT release edgedeploy knows"
    first = present[0]
    reference = reference_release(version)
    if reference is None or [int(p) for p in reference.split(".")] < [int(p) for p in first.split(".")]:
        return f"needs TensorRT {_short(first)} or newer"
    later = RELEASES[RELEASES.index(first) + 1 :]
    gone = next((r for r in later if r not in present), reference)
    return f"is gone from TensorRT {_short(gone)} on"


def require(option: str, items: Iterable[str], version: TrtVersion) -> None:
    """Refuse ``option`` in one line when ``version`` lacks any of the API ``items`` it needs."""
    for item in items:
        if not has(item, version):
            raise InputError(f"{option} {why_missing(item, version)} ({item}); this is TensorRT {version}")


def dla_available(version: TrtVersion) -> bool:
    as_tuple = (version.major, version.minor, version.patch)
    return (version.major, version.minor) <= DLA_LAST_10X or as_tuple >= DLA_BACK_IN_11


def require_dla(version: TrtVersion) -> None:
    require("--dla-core", ("IBuilderConfig.DLA_core", "DeviceType.DLA", "BuilderFlag.GPU_FALLBACK"), version)
    if not dla_available(version):
        raise InputError(
            f"--dla-core needs TensorRT 10.7 or older, or 11.4.1 or newer on Jetson AGX Orin (NVIDIA: 10.7 "
            f"was the last 10.x with DLA, 11.0-11.3 have none); this is TensorRT {version}: build for the GPU"
        )


MEMORY_POOL_ITEMS = {
    "workspace": "MemoryPoolType.WORKSPACE",
    "tactic_shared_memory": "MemoryPoolType.TACTIC_SHARED_MEMORY",
    "dla_managed_sram": "MemoryPoolType.DLA_MANAGED_SRAM",
    "dla_local_dram": "MemoryPoolType.DLA_LOCAL_DRAM",
    "dla_global_dram": "MemoryPoolType.DLA_GLOBAL_DRAM",
    "tactic_dram": "MemoryPoolType.TACTIC_DRAM",
}
HARDWARE_COMPAT_ITEMS = {
    "ampere_plus": ("IBuilderConfig.hardware_compatibility_level", "HardwareCompatibilityLevel.AMPERE_PLUS"),
    "same_compute_capability": (
        "IBuilderConfig.hardware_compatibility_level",
        "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY",
    ),
}
VERBOSITY_ITEMS = {
    "detailed": "ProfilingVerbosity.DETAILED",
    "layer_names_only": "ProfilingVerbosity.LAYER_NAMES_ONLY",
    "none": "ProfilingVerbosity.NONE",
}
# What each build path needs beyond the options the user named.
PATH_ITEMS = {
    "strongly_typed": ("NetworkDefinitionCreationFlag.STRONGLY_TYPED",),
    "fp16_flag": ("BuilderFlag.FP16",),
    "int8_flag": ("BuilderFlag.INT8",),
    "calibration_cache": ("IBuilderConfig.int8_calibrator",),
    "fp32_layers": ("ILayer.precision", "ILayer.set_output_type", "BuilderFlag.OBEY_PRECISION_CONSTRAINTS"),
    "tf32_cleared": ("BuilderFlag.TF32",),
    "version_compatible": ("BuilderFlag.VERSION_COMPATIBLE",),
    "optimization_level": ("IBuilderConfig.builder_optimization_level",),
}


def summary_table() -> list[tuple[str, str]]:
    """(option, releases) rows for the README and docs: what each option needs, from the data."""
    rows = []
    for pool, item in MEMORY_POOL_ITEMS.items():
        rows.append((f"--memory-pool {pool}=MiB", _span(item)))
    for key, items in HARDWARE_COMPAT_ITEMS.items():
        rows.append((f"--hardware-compat {key}", _span(items[-1])))
    rows.append(("--version-compatible", _span("BuilderFlag.VERSION_COMPATIBLE")))
    rows.append(("--opt-level", _span("IBuilderConfig.builder_optimization_level")))
    rows.append(("fp16/int8 builder flags (8.x path)", _span("BuilderFlag.INT8")))
    rows.append(("INT8 calibration cache (8.x path)", _span("IBuilderConfig.int8_calibrator")))
    rows.append(("strongly typed build", _span("NetworkDefinitionCreationFlag.STRONGLY_TYPED")))
    rows.append(("--dla-core", "8.5-10.7, 11.4.1+ (NVIDIA notes)"))
    return rows


def _span(item: str) -> str:
    present = PRESENT[item]
    if not present:
        return "none"
    first, last = _short(present[0]), present[-1]
    if last == RELEASES[-1]:
        return f"{first}+"
    gone = RELEASES[RELEASES.index(last) + 1]
    return f"{first} to before {_short(gone)}"
