"""The build stage: fp32 ONNX -> precision artifact (fp16 / int8 ONNX) -> backend build output.

Precision is decided here on the CPU (architecture principle 1); the backend only compiles
what it is given. The target is checked before any work starts.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibration.modelinfo import TensorSpec, model_io
from calibration.sources import DataSource
from edgedeploy.backends import BuildOptions, BuildResult, resolve_backend
from edgedeploy.errors import InputError
from edgedeploy.onnxio import copy_model
from edgedeploy.precision import PrecisionArtifact
from edgedeploy.precision.fp16 import Fp16Options
from edgedeploy.targets import Target
from edgedeploy.ui import QUIET, Ui


@dataclass
class CalibrationSettings:
    """How to calibrate: the [calibration] config section and the --calib-* options share these."""

    data: str = ""
    algorithm: str = "auto"
    samples: int = 512
    batch_size: int = 8
    seed: int = 0
    percentile: float = 99.99
    exclude_nodes: list[str] = field(default_factory=list)
    exclude_ops: list[str] = field(default_factory=list)
    trt_version: str | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)


@dataclass
class CalibrationRequest(CalibrationSettings):
    """The settings as a build uses them: data resolved to a spec, and shapes for dynamic dims."""

    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def open(self, inputs: Sequence[TensorSpec]) -> DataSource:
        """The calibration data for a model with ``inputs`` (seeded random data when none is given)."""
        from calibration.sources import open_source

        return open_source(
            self.data or f"random:{self.seed}", inputs, samples=self.samples, batch_size=self.batch_size,
            seed=self.seed, shapes=self.shapes or None, image_options=self.preprocess or None,
        )  # fmt: skip


@dataclass
class BuildRequest:
    precision: str
    target: Target
    backend: str = "auto"
    fp16: Fp16Options = field(default_factory=Fp16Options)
    calibration: CalibrationRequest = field(default_factory=CalibrationRequest)
    options: dict[str, Any] = field(default_factory=dict)  # extra BuildOptions fields (TensorRT)
    fp16_analysis: bool = True  # fp16: range analysis chooses fp32 islands (on calibration.data or random)
    accuracy_budget: str | None = None  # e.g. "cosine>=0.999,top1>=0.99" (fp16 and int8)


@dataclass
class BuildOutcome:
    precision: PrecisionArtifact
    build: BuildResult
    backend_note: str


def artifact_name(model: Path, precision: str) -> str:
    stem = model.name.removesuffix(".onnx")
    for suffix in (".fp32", ".fp16", ".int8"):
        stem = stem.removesuffix(suffix)
    return f"{stem}.{precision}.onnx"


def precision_of_model(model: Path) -> str:
    """What a model already is: int8 (Q/DQ nodes), fp16 (fp16 weights or Casts) or fp32."""
    from edgedeploy.onnxio import load_onnx
    from edgedeploy.precision.emulate import is_fp16_model

    graph_model = load_onnx(model, load_external_data=False)
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph_model.graph.node):
        return "int8"
    return "fp16" if is_fp16_model(graph_model) else "fp32"


def _use_as_is(model: Path, precision: str, dest: Path, ui: Ui) -> PrecisionArtifact:
    """A model that already is the precision asked for (a bundle's fp16 or Q/DQ ONNX) is built unchanged.

    Its companions beside it (precision plan, TensorRT calibration cache) come along.
    """
    from edgedeploy.fileio import atomic_path

    base = model.name.removesuffix(".onnx").removesuffix(f".{precision}")
    companions = [model.with_name(f"{base}.{precision}.plan.json"), model.with_name(f"{base}.calib.cache")]
    files = copy_model(model, dest)  # with its external data
    for src in companions:
        target = dest.with_name(src.name)
        if src.is_file() and src.resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(src, tmp)
        if src.is_file():
            files.append(target)
    ui.info(f"{model.name} is already an {precision} model: built as it is")
    return PrecisionArtifact(precision, dest, files, info={"as_is": True})


def make_precision(model: Path, request: BuildRequest, out_dir: Path, ui: Ui = QUIET) -> PrecisionArtifact:
    """Write the precision ONNX for ``request.precision`` into ``out_dir``."""
    dest = out_dir / artifact_name(model, request.precision)
    existing = precision_of_model(model)
    if existing != "fp32":
        if existing != request.precision:
            raise InputError(
                f"{model.name} is already an {existing} model: build it with --precision {existing}, "
                "or start from the fp32 model"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        return _use_as_is(model, existing, dest, ui)
    if request.precision == "fp32":
        out_dir.mkdir(parents=True, exist_ok=True)
        return PrecisionArtifact("fp32", dest, copy_model(model, dest))  # with its external data
    if request.precision == "fp16":
        from edgedeploy.precision.mixed import make_fp16_checked

        return make_fp16_checked(model, dest, request, ui)
    if request.precision == "int8":
        artifact = _make_int8(model, dest, request, ui)
        if request.accuracy_budget:
            from edgedeploy.precision.mixed import int8_within_budget

            artifact = int8_within_budget(model, dest, artifact, request, ui)
        return artifact
    raise InputError(
        f"precision '{request.precision}' is not built by edgedeploy yet; use fp32, fp16 or int8"
    )


def _make_int8(model: Path, dest: Path, request: BuildRequest, ui: Ui) -> PrecisionArtifact:
    try:
        from edgedeploy.precision.int8 import make_int8
    except ImportError:  # pragma: no cover - calibration is part of the package
        raise InputError("int8 needs the calibration package, which is missing from this install") from None
    calib = request.calibration
    inputs, _ = model_io(model)
    if not calib.data:
        ui.warn(
            "no --calib-data given: calibrating on seeded random data; the result is synthetic "
            "and its accuracy says little about real inputs"
        )
    source = calib.open(inputs)
    return make_int8(
        model,
        dest,
        target=request.target,
        source=source,
        algorithm=calib.algorithm,
        percentile=calib.percentile,
        exclude_nodes=calib.exclude_nodes,
        exclude_ops=calib.exclude_ops,
        trt_version=calib.trt_version,
        ui=ui,
    )


def build(model: Path, request: BuildRequest, out_dir: Path, ui: Ui = QUIET) -> BuildOutcome:
    """Check the target, make the precision artifact, and compile it with the chosen backend."""
    request.target.check_precision(request.precision)
    request.target.check_dla(request.options.get("dla_core"))
    backend, note = resolve_backend(request.backend, request.target.is_gpu)
    precision = make_precision(model, request, out_dir, ui)
    ui.info(note)
    extra = dict(request.options)
    for path in precision.files:
        if path.name.endswith(".plan.json"):
            extra.setdefault("precision_plan", path)
        elif path.name.endswith(".cache") and request.precision == "int8":
            extra.setdefault("calibration_cache", path)
    options = BuildOptions(precision=request.precision, target=request.target, **extra)
    with ui.progress(f"{backend.name} build ({request.precision})") as advance:
        result = backend.build(precision.path, options, out_dir)
        advance(1.0)
    return BuildOutcome(precision=precision, build=result, backend_note=note)
