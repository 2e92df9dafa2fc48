"""Targets are data: one TOML per board or GPU, shipped inside the wheel.

A request the target cannot serve (INT8 on a Jetson Nano, DLA on an Orin Nano, FP8 below
compute capability 8.9) is refused here, before any work starts.
"""

from __future__ import annotations

import difflib
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from edgedeploy.errors import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_TARGET = "x86-64-cpu"
HOST = "host"  # --target host: the CPU target that fits this machine (see host_target_name)
X86_64_MACHINES = frozenset({"x86_64", "amd64"})  # platform.machine() of an x86-64 CPU
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "asimddp"})
KNOWN_PRECISIONS = ("fp32", "tf32", "fp16", "bf16", "int8", "fp8", "fp4")
# Precisions the pipeline can produce today (the others are known to targets only).
BUILDABLE_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    kind: str  # "jetson", "desktop" or "cpu"
    gpu_arch: str
    dla_cores: int
    precisions: tuple[str, ...]
    default_workspace_mb: int
    compute_capability: str | None = None  # "8.7": a board's or GPU's; a CPU target has none (None)
    memory_gb: float | None = None  # a board's or GPU's; a CPU target names no machine (None)
    jetpack: tuple[str, ...] = ()
    tensorrt: tuple[str, ...] = ()
    max_workspace_mb: int | None = None
    slow_precisions: tuple[str, ...] = ()
    vnni: bool = False
    power_modes: dict[str, int] = field(default_factory=dict)
    default_power_mode: str | None = None
    device_tree_model: str | None = None

    @property
    def is_gpu(self) -> bool:
        return self.kind in ("jetson", "desktop")

    @property
    def cc_tuple(self) -> tuple[int, int]:
        """(major, minor); (0, 0), below every GPU's, for a target without one (a CPU target)."""
        major, _, minor = (self.compute_capability or "0.0").partition(".")
        return int(major), int(minor or 0)

    def check_precision(self, precision: str) -> None:
        """Refuse a precision this target has no fast support for, with the reason."""
        if precision not in KNOWN_PRECISIONS:
            raise InputError(
                f"unknown precision '{precision}'; choose one of {', '.join(BUILDABLE_PRECISIONS)}"
            )
        if precision not in BUILDABLE_PRECISIONS:  # first: on any target (fp8 named sm_89 targets,
            # which then refused it as not built)
            raise InputError(
                f"precision '{precision}' is not built by edgedeploy yet; use fp32, fp16 or int8"
            )
        if precision not in self.precisions:
            why = ""
            if precision == "int8" and self.kind == "jetson":
                why = f" ({self.gpu_arch} sm_{''.join(map(str, self.cc_tuple))} has no fast INT8)"
            raise InputError(
                f"target '{self.name}' does not support {precision}{why}; "
                f"supported: {', '.join(self.precisions)}"
            )

    def check_dla(self, dla_core: int | None) -> None:
        if dla_core is None:
            return
        if self.dla_cores == 0:
            raise InputError(f"target '{self.name}' has no DLA cores; drop --dla-core")
        if not 0 <= dla_core < self.dla_cores:
            raise InputError(f"target '{self.name}' has DLA cores 0..{self.dla_cores - 1}, not {dla_core}")


def _profiles() -> dict[str, Any]:
    root = resources.files("edgedeploy.target_profiles")
    found: dict[str, Any] = {}
    for entry in root.iterdir():
        if entry.name.endswith(".toml"):
            found[entry.name[: -len(".toml")]] = entry
    return found


def target_names() -> list[str]:
    """The shipped profiles (``host`` is an alias, not a profile)."""
    return sorted(_profiles())


def _from_dict(data: dict[str, Any]) -> Target:
    tuples = ("precisions", "jetpack", "tensorrt", "slow_precisions")
    kwargs = {k: tuple(v) if k in tuples else v for k, v in data.items()}
    known = set(Target.__dataclass_fields__)
    unknown = set(kwargs) - known
    if unknown:
        raise InputError(f"target '{data.get('name')}' has unknown fields: {', '.join(sorted(unknown))}")
    if kwargs.get("compute_capability") is not None:  # TOML may give 8.7 as a number
        kwargs["compute_capability"] = str(kwargs["compute_capability"])
    return Target(**kwargs)  # type: ignore[arg-type]


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 ``flags``, ARM ``Features``); empty if unreadable."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's name as /proc/cpuinfo gives it (x86 ``model name``, some ARM kernels ``Model``),
    else the machine type (``aarch64``): what a measurement says it ran on."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def has_vnni(flags: set[str] | None = None) -> bool:
    """x86 VNNI (AVX512-VNNI or AVX-VNNI) or ARM dot-product: 8-bit dot products that accumulate in
    32 bits, so ONNX Runtime's u8 x s8 kernels do not saturate on full-range 8-bit weights."""
    return bool((cpu_flags() if flags is None else flags) & VNNI_FLAGS)


def host_target_name(flags: set[str] | None = None, machine: str | None = None) -> str | None:
    """The CPU target for this machine: x86-64-vnni where an x86-64 CPU has VNNI, else x86-64-cpu
    (its 7-bit INT8 weights are safe on any x86 CPU). None on another CPU (aarch64: a Jetson, a
    Graviton): the CPU targets are x86-64, and naming one there would measure and report an ARM
    CPU as x86 (an ARM dot-product CPU has no x86 target with its arithmetic)."""
    machine = (machine or platform.machine()).lower()
    if machine not in X86_64_MACHINES:
        return None
    return "x86-64-vnni" if has_vnni(flags) else DEFAULT_TARGET


def load_target(name: str, *, list_known: bool = False) -> Target:
    """The target profile ``name`` (case and surrounding blanks ignored: JETSON-ORIN-NANO works);
    ``host`` resolves to :func:`host_target_name`. An unknown name's line points to ``edgedeploy
    targets``, or with ``list_known`` (what that command says) lists the known names itself."""
    profiles = _profiles()
    name = name.strip().lower() if isinstance(name, str) else str(name)
    if name == HOST:
        host = host_target_name()
        if host is None:
            raise InputError(
                f"--target host: no target fits this {platform.machine() or 'unknown'} CPU (the CPU targets"
                f" are x86-64); name the target to build for ({DEFAULT_TARGET}'s 7-bit INT8 weights run"
                " on any CPU, or a Jetson's name; see 'edgedeploy targets')"
            )
        name = host
    if name not in profiles:
        close = difflib.get_close_matches(name, profiles, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        if list_known:
            known = ", ".join(sorted(profiles))
            hint += f"{'' if close else ';'} known targets: {known}, and {HOST} (this CPU)"
        else:
            hint += " (see 'edgedeploy targets')"
        raise InputError(f"unknown target '{name}'{hint}")
    data = tomllib.loads(profiles[name].read_text())
    return _from_dict(data)


def all_targets() -> list[Target]:
    return [load_target(n) for n in target_names()]


# What `run`'s table title and the report say where measured_off_target holds
MEASURED_OFF_TARGET = "measured with ONNX Runtime on this machine's CPU, not on the device"


def measured_off_target(target: str | None, backends: Iterable[str]) -> bool:
    """Whether figures of a GPU target were measured with ONNX Runtime on this machine's CPU (no
    TensorRT here): then they say nothing about the device's speed."""
    if not target:
        return False
    try:
        gpu = load_target(target).is_gpu
    except InputError:  # a target this version does not know (a report of an older run)
        return False
    return gpu and "onnxruntime" in set(backends)
