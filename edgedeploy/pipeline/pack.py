"""``edgedeploy bundle``: compare precision artifacts made elsewhere and pack them into a bundle.

The pipeline's own bundle stage lives in :mod:`edgedeploy.pipeline.run`; this is the same two
stages (compare, bundle) for files the user hands in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from calibration.feeds import fixed_batches, static_batch
from calibration.modelinfo import TensorSpec, model_io
from edgedeploy.errors import InputError
from edgedeploy.fileio import sha256_file
from edgedeploy.onnxio import is_onnx_path, model_stem
from edgedeploy.options import ShapeProfile
from edgedeploy.pipeline.run import build_settings, bundle_report_writer
from edgedeploy.stages.build import MIXED_WORDS, check_int8_for_target, model_words, precision_of_model
from edgedeploy.stages.bundle import BundleArtifact, BundleResult, check_bundle_output, make_bundle
from edgedeploy.stages.bundle.make import BUNDLE_COMPARES
from edgedeploy.stages.compare import Gates, compare, refuse_without_tensor_outputs, run_pair
from edgedeploy.stages.precision.emulate import MIXED
from edgedeploy.stages.report.load import precision_from_name
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
    profiles: list[ShapeProfile] | None = None,
) -> BundleResult:
    """Bundle an fp32 model and precision artifacts made elsewhere (``edgedeploy bundle``).

    Each artifact is compared with the reference on ``feeds`` for its manifest entry; its
    companions beside it (precision plan, calibration cache, the report's data) come along, and
    the bundle carries its report. The manifest records the shape profiles the device builds
    with (see :func:`build_settings`).
    """
    check_bundle_output(output.resolve())  # before the comparisons; make_bundle checks again as it writes
    if (kind := precision_of_model(reference)) != "fp32":
        raise InputError(
            f"{reference} is {model_words(reference, 'fp16') if kind == MIXED else f'an {kind} model'}: "
            "the first model is the fp32 reference the device checks every precision against; give "
            "the fp32 model first"
        )
    if target.is_gpu:  # the device builds its engines with TensorRT
        from edgedeploy.backends.trt_plan import refuse_values_tensorrt_lacks

        refuse_values_tensorrt_lacks(reference, target.name, "bundle it for a CPU target")
    inputs, outputs = model_io(reference)
    refuse_without_tensor_outputs(reference.name, outputs, BUNDLE_COMPARES)  # before the comparisons
    reference_inputs = _reference_batch(inputs, artifacts, feeds)
    engines = [p for p in artifacts if not is_onnx_path(p)]
    build = build_settings(reference, inputs, engines, target, reference_inputs, profiles or [])
    entries = [BundleArtifact("fp32", "onnxruntime", reference)]
    for path in artifacts:
        if is_onnx_path(path):
            precision = precision_of_model(path)
            if precision == MIXED:  # our fp16 build whose fp32 islands hold most layers says so by name
                if precision_from_name(str(path)) != "fp16":
                    raise InputError(
                        f"{path} is {MIXED_WORDS}: a bundle names one precision per model; bundle its "
                        "fp32 model, or an fp16 build of it (edgedeploy build --precision fp16)"
                    )
                precision = "fp16"
            _check_precision(path, precision, target)
            if precision == "int8":
                check_int8_for_target(path, target)  # the device builds its engine from it
            entry = BundleArtifact(precision, "onnxruntime", model=path)
        else:  # an engine: its precision ONNX, when it lies beside it, is what the device rebuilds from
            precision = _engine_precision(path)
            _check_precision(path, precision, target)
            onnx_beside = _onnx_beside(path, precision)
            entry = BundleArtifact(
                precision, "tensorrt", model=onnx_beside if onnx_beside.is_file() else reference, engine=path
            )
        same = [e for e in entries if (e.precision, e.backend) == (entry.precision, entry.backend)]
        if same:
            raise InputError(
                f"{path} and {same[0].engine or same[0].model} are both {precision} for {entry.backend}: "
                "a bundle holds one artifact per precision and backend"
            )
        beside = _companions(entry.model, precision)
        plan, cache = beside["plan"], beside["cache"]
        entry.precision_plan = plan if plan.is_file() else None
        entry.calibration_cache = cache if cache.is_file() and precision == "int8" else None
        # the report's data: fp16 ranges, the budget search, the calibration report (named without precision)
        extra = [beside["ranges"], beside["budget"]] + ([beside["report"]] if precision == "int8" else [])
        entry.extra_files = [p for p in extra if p.is_file()]
        entries.append(entry)
    for entry, path in zip(entries[1:], artifacts, strict=True):  # every artifact named and paired first
        entry.compare = compare(reference, path, feeds, gates, data_description).summary()
    ref_out, _ = run_pair(reference, reference, [reference_inputs])
    return make_bundle(
        output,
        model_name=model_stem(reference.name),
        model_source=str(reference),
        model_sha256=sha256_file(reference),
        target=target,
        inputs=inputs,
        outputs=outputs,
        artifacts=entries,
        gates=gates.manifest(),
        reference_inputs=reference_inputs,
        reference_outputs=ref_out[0],
        report=bundle_report_writer(ui),
        build=build,
        preprocess=data_description.get("preprocess"),
    )


def _engine_precision(engine: Path) -> str:
    return next((p for p in ("int8", "fp16", "fp32") if f".{p}." in engine.name), "fp32")


def _onnx_beside(engine: Path, precision: str) -> Path:
    """The precision ONNX an engine was built from, named as it lies beside it."""
    return engine.with_name(engine.name.split(f".{precision}.")[0] + f".{precision}.onnx")


def _companions(model: Path, precision: str) -> dict[str, Path]:
    """The files a ``precision`` artifact of ONNX ``model`` brings along, found by name beside it: its
    precision plan, calibration cache and the report's data (fp16 ranges, the budget search, the
    calibration report, named without precision)."""
    base = model_stem(model.name)
    names = {
        "plan": f"{base}.{precision}.plan.json",
        "cache": f"{base}.calib.cache",
        "ranges": f"{base}.{precision}.ranges.json",
        "budget": f"{base}.{precision}.budget.json",
        "report": f"{base}.calib.json",
    }
    return {key: model.with_name(name) for key, name in names.items()}


def read_beside(reference: Path, artifacts: list[Path]) -> list[Path]:
    """The files :func:`bundle_artifacts` may read beside the models it is given, which no argument
    names: inputs that ``--json`` may not replace (cli/guard.py). An ONNX artifact's precision is
    known only once it is read, so the names of every precision are counted."""
    models = [reference, *artifacts]
    models += [_onnx_beside(p, _engine_precision(p)) for p in artifacts if not is_onnx_path(p)]
    return [
        path
        for model in models
        for precision in ("fp32", "fp16", "int8")
        for path in (*_companions(model, precision).values(), model)
        if path.exists()
    ]


def _reference_batch(
    inputs: list[TensorSpec], artifacts: list[Path], feeds: list[dict[str, Any]]
) -> dict[str, Any]:
    """The batch verify.sh runs every artifact on: the first of ``feeds``, or where an ONNX artifact
    is fixed at one batch beside a dynamic reference, the first batch of that size (8 rows failed on
    the device against an artifact fixed at 5). Two artifacts fixed at different batches have no
    batch in common: refused."""
    fixed: dict[int, tuple[Path, list[TensorSpec]]] = {}
    for path in artifacts if static_batch(inputs) is None else []:
        if is_onnx_path(path) and (batch := static_batch(spec := model_io(path)[0])) is not None:
            fixed.setdefault(batch, (path, spec))
    if len(fixed) > 1:
        named = ", ".join(f"{path.name} at {batch}" for batch, (path, _) in fixed.items())
        raise InputError(
            f"the artifacts are fixed at different batches ({named}): verify.sh runs them all on one "
            "batch of reference inputs; bundle artifacts that take the same batch"
        )
    if not fixed:
        return feeds[0]
    _, spec = next(iter(fixed.values()))
    return next(iter(fixed_batches(feeds, inputs, spec)))


def _check_precision(path: Path, precision: str, target: Target) -> None:
    """The check ``build`` makes (:meth:`Target.check_precision`): an artifact of a precision the
    target cannot serve would be what the device builds, and its default when it is the lowest."""
    try:
        target.check_precision(precision)
    except InputError as exc:
        raise InputError(f"{path} is {precision}: {exc}") from None
