"""``edgedeploy bundle``: compare precision artifacts made elsewhere and pack them into a bundle.

The pipeline's own bundle stage lives in :mod:`edgedeploy.pipeline.run`; this is the same two
stages (compare, bundle) for files the user hands in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibration.modelinfo import model_io
from edgedeploy.fileio import sha256_file
from edgedeploy.pipeline.run import bundle_report_writer
from edgedeploy.stages.build import precision_of_model
from edgedeploy.stages.bundle import BundleArtifact, BundleResult, make_bundle
from edgedeploy.stages.compare import Gates, compare, run_pair
from edgedeploy.targets import Target
from edgedeploy.ui import QUIET, Ui


def bundle_artifacts(
    reference: Path,
    artifacts: list[Path],
    output: Path,
    target: Target,
    feeds: list[dict[str, Any]],
    data_description: dict[str, Any],
    gates: Gates,
    ui: Ui = QUIET,
) -> BundleResult:
    """Bundle an fp32 model and precision artifacts made elsewhere (``edgedeploy bundle``).

    Each artifact is compared with the reference on ``feeds`` for its manifest entry; its
    companions beside it (precision plan, calibration cache, the report's data) come along, and
    the bundle carries its report.
    """
    inputs, outputs = model_io(reference)
    entries = [BundleArtifact("fp32", "onnxruntime", reference)]
    for path in artifacts:
        result = compare(reference, path, feeds, gates, data_description)
        if path.suffix == ".onnx":
            precision = precision_of_model(path)
            entry = BundleArtifact(precision, "onnxruntime", model=path)
        else:  # an engine: its precision ONNX, when it lies beside it, is what the device rebuilds from
            precision = next((p for p in ("int8", "fp16", "fp32") if f".{p}." in path.name), "fp32")
            onnx_beside = path.with_name(path.name.split(f".{precision}.")[0] + f".{precision}.onnx")
            entry = BundleArtifact(
                precision, "tensorrt", model=onnx_beside if onnx_beside.is_file() else reference, engine=path
            )
        base = entry.model.name.removesuffix(".onnx").removesuffix(f".{precision}")
        plan = entry.model.with_name(f"{base}.{precision}.plan.json")
        cache = entry.model.with_name(f"{base}.calib.cache")
        entry.precision_plan = plan if plan.is_file() else None
        entry.calibration_cache = cache if cache.is_file() and precision == "int8" else None
        # the report's data: fp16 ranges, the budget search, the calibration report (named without precision)
        names = [f"{base}.{precision}.ranges.json", f"{base}.{precision}.budget.json"]
        names += [f"{base}.calib.json"] if precision == "int8" else []
        entry.extra_files = [p for p in (entry.model.with_name(n) for n in names) if p.is_file()]
        entry.compare = result.summary()
        entries.append(entry)
    ref_out, _ = run_pair(reference, reference, feeds[:1])
    return make_bundle(
        output,
        model_name=reference.name.removesuffix(".onnx").removesuffix(".fp32"),
        model_source=str(reference),
        model_sha256=sha256_file(reference),
        target=target,
        inputs=inputs,
        outputs=outputs,
        artifacts=entries,
        gates=gates.manifest(),
        reference_inputs=feeds[0],
        reference_outputs=ref_out[0],
        report=bundle_report_writer(ui),
    )
