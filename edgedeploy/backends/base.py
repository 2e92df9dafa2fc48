"""The one small protocol every backend implements: build, runner, describe.

The pipeline and the CLI only know this protocol; they never import onnxruntime or tensorrt
themselves. A new backend is one new module with one class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from edgedeploy.options import ShapeProfile
from edgedeploy.targets import Target

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner


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
    # --input: the shapes the built artifact is run on once, as every artifact is before it is built
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # one batch of the user's calibration data, when given: what the built artifact is run on once,
    # before ``shapes`` (random inputs can fail a model its real data runs, see stages/build.py)
    feed: dict[str, Any] | None = None
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

    def check_options(self, options: BuildOptions, model: Path | None = None) -> None:
        """Refuse, before any work (the precision stage included), options this backend cannot serve,
        and those ``model`` (the fp32 model the precision artifact is made of) cannot take."""
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
