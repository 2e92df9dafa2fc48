"""The one small protocol every backend implements: build, runner, describe.

The pipeline and the CLI only know this protocol; they never import onnxruntime or tensorrt
themselves. A new backend is one new module with one class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgedeploy.errors import InputError
from edgedeploy.targets import Target

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max shape per input for one optimization profile (TensorRT)."""

    shapes: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]

    @classmethod
    def from_config(cls, table: dict[str, Any]) -> ShapeProfile:
        """``{input = {min = [..], opt = [..], max = [..]}}`` from the config file."""
        shapes = {}
        for name, spec in table.items():
            if not isinstance(spec, dict) or set(spec) != {"min", "opt", "max"}:
                raise InputError(f"profile for '{name}' needs exactly min, opt and max shapes")
            shapes[name] = _check_min_opt_max(
                name, tuple(spec["min"]), tuple(spec["opt"]), tuple(spec["max"])
            )
        return cls(shapes)

    @classmethod
    def parse(cls, items: list[str]) -> ShapeProfile:
        """``NAME:MIN,OPT,MAX`` items such as ``images:1x3x224x224,4x3x224x224,8x3x224x224``."""
        shapes = {}
        for item in items:
            name, sep, ranges = item.rpartition(":")
            parts = ranges.split(",")
            if not sep or not name or len(parts) != 3:
                raise InputError(
                    f"bad --profile '{item}': expected NAME:MIN,OPT,MAX e.g. x:1x3x8x8,4x3x8x8,8x3x8x8"
                )
            try:
                dims = [tuple(int(d) for d in p.split("x")) for p in parts]
            except ValueError:
                raise InputError(f"bad --profile '{item}': dims must be integers") from None
            shapes[name] = _check_min_opt_max(name, dims[0], dims[1], dims[2])
        return cls(shapes)


def _check_min_opt_max(
    name: str,
    lo: tuple[int, ...],
    opt: tuple[int, ...],
    hi: tuple[int, ...],
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    if not len(lo) == len(opt) == len(hi):
        raise InputError(f"profile for '{name}': min, opt and max must have the same rank")
    if any(not (a <= b <= c) or a < 1 for a, b, c in zip(lo, opt, hi, strict=True)):
        raise InputError(
            f"profile for '{name}': need 1 <= min <= opt <= max in every dim, got {lo}, {opt}, {hi}"
        )
    return tuple(int(d) for d in lo), tuple(int(d) for d in opt), tuple(int(d) for d in hi)


@dataclass
class BuildOptions:
    """Everything a backend needs besides the precision artifact. Unused fields are ignored."""

    precision: str
    target: Target
    workspace_mb: int | None = None
    memory_pools_mb: dict[str, int] = field(default_factory=dict)
    profiles: list[ShapeProfile] = field(default_factory=list)
    optimization_level: int | None = None
    timing_cache: Path | None = None
    dla_core: int | None = None
    hardware_compatibility: str | None = None  # none | ampere_plus | same_compute_capability
    version_compatible: bool = False
    profiling_verbosity: str | None = None  # layer_names_only | detailed | none
    tf32: bool | None = None  # TensorRT: None keeps TensorRT's default (on); False clears it
    calibration_cache: Path | None = None  # TensorRT 8.x implicit INT8
    precision_plan: Path | None = None  # JSON: nodes kept in higher precision
    threads: int | None = None  # CPU backends
    force: bool = False  # rebuild even when the build key matches


@dataclass
class BuildResult:
    backend: str
    artifact: Path  # what runs: an .onnx for ONNX Runtime, an .engine for TensorRT
    files: list[Path]  # every file the build wrote (artifact, sidecars, layer info)
    skipped: bool  # the build key matched an existing output: no work was done
    info: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """Whether this backend can run here, and if not, one line on how to get it."""
        ...

    def check_options(self, options: BuildOptions) -> None:
        """Refuse, before any work (the precision stage included), options this backend cannot serve."""
        ...

    def build(self, model: Path, options: BuildOptions, out_dir: Path) -> BuildResult:
        """Compile the precision artifact ``model`` for ``options.target`` into ``out_dir``."""
        ...

    def runner(self, artifact: Path, *, threads: int | None = None) -> BaseRunner:
        """A Polygraphy runner for a built artifact, so compare and profile treat all alike."""
        ...

    def describe(self) -> dict[str, str]:
        """Tool versions for manifests and reports."""
        ...
