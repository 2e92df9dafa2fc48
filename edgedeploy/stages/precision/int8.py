"""The int8 precision producer: a Q/DQ ONNX from calibration/, placed for the target.

GPU targets get TensorRT's placement (and a calibration cache for the target's TensorRT 8.x or
10.x implicit path); CPU targets get ONNX Runtime's, with 7-bit weights unless the target
declares VNNI (ONNX Runtime's u8 x s8 kernels saturate on full-range weights without it).
The rule follows the target profile, not the machine that calibrates.
"""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calibration.calibrate import CalibrationOptions, CalibrationResult, calibrate
from calibration.defaults import DEFAULT_PERCENTILE
from calibration.errors import CalibrationError, ModelLoadError, NothingToQuantize
from calibration.modelinfo import model_io
from calibration.sources import DataSource, open_source
from calibration.trt_cache import parse_version
from edgedeploy.errors import InputError, NothingQuantized, naming_guessed_dims
from edgedeploy.onnxio import refuse_unloadable
from edgedeploy.options import sources_opened_for_command
from edgedeploy.stages.precision import PrecisionArtifact
from edgedeploy.stages.precision.fp16 import conversion_checked_words, runtime_for
from edgedeploy.targets import VNNI_FLAGS, Target, cpu_flags, has_vnni

if TYPE_CHECKING:
    from edgedeploy.ui import Ui


def placement_for(target: Target) -> str:
    """Whose Q/DQ placement an int8 artifact for ``target`` takes: the runtime it is made for,
    by the rule an fp16 one's block list follows (:func:`fp16.runtime_for`, whatever the backend:
    TensorRT takes int8 Q/DQ only, and a GPU target's bundle builds a TensorRT engine from it)."""
    return runtime_for(target)


def weight_bits_for(target: Target) -> int:
    """8-bit weights on GPUs and on CPUs with VNNI; 7-bit ("reduce range") on other CPUs."""
    return 8 if target.is_gpu or target.vnni else 7


def emulate_integer_for(target: Target) -> bool:
    """Whether auto's candidates (and the accuracy budget's variants) run with their integer
    arithmetic emulated in float rather than on ONNX Runtime's integer kernels of this CPU.

    TensorRT's placement always: TensorRT computes what the Q/DQ graph says (integer products
    summed exactly, rescaled in float), which the emulation gives up to float rounding, whatever
    this CPU is; ONNX Runtime's int8-activation kernels are not TensorRT's (on ddddocr's
    recognizer the held-out cosines on them differed from the emulated ones by 1e-3) and ran
    slower than the emulation on the convolutional real models. A CPU target with 8-bit weights
    (VNNI) calibrated on a CPU without 8-bit dot products, where ONNX Runtime's u8 x s8 kernels
    saturate, too. See docs/design.md, "Integer kernels this CPU lacks"."""
    if placement_for(target) == "tensorrt":
        return True
    return weight_bits_for(target) == 8 and not has_vnni()


def cache_version_for(target: Target, requested: str | None = None) -> str | None:
    """The TensorRT version whose cache header to write: the one asked for, else the target's
    oldest 8.x/10.x (the implicit-calibration path), else None (CPU targets, TensorRT 11 only)."""
    if requested:
        return requested
    usable = [v for v in target.tensorrt if parse_version(v)[0] <= 10]
    return sorted(usable, key=parse_version)[0] if usable else None


def cpu_has_vnni() -> tuple[bool, str]:
    """Whether this CPU has 8-bit dot-product instructions (x86 VNNI, ARM dotprod), and one line why."""
    flags = cpu_flags()
    if not flags:
        return False, f"unknown ({platform.machine()}: /proc/cpuinfo unreadable)"
    found = sorted(flags & VNNI_FLAGS)
    if found:
        return True, f"yes ({', '.join(found)})"
    return False, "no (ONNX Runtime's integer kernels need 7-bit weights on this CPU)"


def open_calibration_data(
    model: Path,
    spec: str | os.PathLike[str],
    *,
    samples: int | None = None,
    batch_size: int = 1,
    seed: int = 0,
    preprocess: Mapping[str, Any] | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
    batch_from_shapes: bool = True,
) -> DataSource:
    """Open a calibration data spec for ``model`` (user errors -> InputError); ``batch_from_shapes``:
    see :func:`calibration.sources.open_source`."""

    try:
        inputs, _ = model_io(model)
        return open_source(
            spec,
            inputs,
            samples=samples,
            batch_size=batch_size,
            seed=seed,
            shapes=shapes,
            image_options=dict(preprocess) if preprocess else None,
            batch_from_shapes=batch_from_shapes,
        )
    except CalibrationError as exc:
        raise InputError(str(exc)) from None


def int8_content(model: Path) -> str | None:
    """What of ``model`` is int8 already: its weights only (:func:`calibration.qdq.int8_weights_only`),
    or its layers (integer ops); None for a model without integer ops."""
    from calibration.qdq import int8_weights_only
    from edgedeploy.onnxio import load_onnx
    from edgedeploy.stages.precision.emulate import onnx_precision

    proto = load_onnx(model, load_external_data=False)
    if int8_weights_only(proto):
        return "its weights are int8, DequantizeLinear of int8 initializers, its activations float"
    return "its layers are quantized" if onnx_precision(proto) == "int8" else None


def already_int8(model: Path) -> str | None:
    """The refusal of a calibration that found nothing to quantize in an int8 model, which says
    so (it said "no Conv ... with constant float32 weights" of a model whose weights are int8)."""
    content = int8_content(model)
    if content is None:
        return None
    return (
        f"{model.name} is already an int8 model ({content}): calibration finds no float32 weights to "
        "quantize; calibrate the fp32 model it was made from, or build this one with --precision int8"
    )


def make_int8(
    model: Path,
    out_path: Path,
    *,
    target: Target,
    source: DataSource,
    algorithm: str = "auto",
    percentile: float = DEFAULT_PERCENTILE,
    exclude_nodes: Sequence[str] = (),
    exclude_ops: Sequence[str] = (),
    trt_version: str | None = None,
    threads: int | None = None,
    force: bool = False,
    ui: Ui | None = None,
) -> PrecisionArtifact:
    """Calibrate ``model`` on ``source`` and write its Q/DQ ONNX to ``out_path``.

    Beside it go ``<stem>.calib.json`` (report and result cache) and, for TensorRT <= 10,
    ``<stem>.calib.cache``. A rerun whose calibration key matches reuses the result.

    Args:
        model: the fp32 ONNX model.
        out_path: where the Q/DQ ONNX goes (``<stem>.int8.onnx``).
        target: decides Q/DQ placement (TensorRT or ONNX Runtime), weight bits (7 on CPUs without
            VNNI) and the TensorRT version the cache header is written for.
        source: the calibration data (checked feeds).
        algorithm: entropy, max, percentile or mse.
        percentile: the percentile kept by ``algorithm="percentile"``.
        exclude_nodes: node names or regexes left in float.
        exclude_ops: op types left in float.
        trt_version: write the TensorRT cache for this version instead of the target's.
        threads: ONNX Runtime intra-op threads for the calibration pass.
        force: recalibrate even when the key matches.
        ui: where progress and notes go (silent when None).
    """
    target.check_precision("int8")
    name = Path(out_path).name
    stem = name[: -len(".int8.onnx")] if name.endswith(".int8.onnx") else Path(name).stem
    options = CalibrationOptions(
        algorithm=algorithm,
        percentile=percentile,
        placement=placement_for(target),
        weight_bits=weight_bits_for(target),
        exclude_nodes=tuple(exclude_nodes),
        exclude_ops=tuple(exclude_ops),
        trt_version=cache_version_for(target, trt_version),
        threads=threads,
        force=force,
        emulate_integer=emulate_integer_for(target),
    )
    if ui is not None and options.emulate_integer and algorithm == "auto" and not target.is_gpu:
        ui.info(
            f"int8: this CPU has no 8-bit dot products (VNNI): the {target.name} candidates are measured "
            "with their integer arithmetic emulated in float (ONNX Runtime's kernels here saturate)"
        )
    try:
        with naming_guessed_dims(source.fed_as_one), _kept_for_the_call(source):
            result = calibrate(model, source, options, Path(out_path).parent, stem=stem, qdq_name=name)
    except NothingToQuantize as exc:
        raise NothingQuantized(already_int8(Path(model)) or str(exc)) from None
    except CalibrationError as exc:
        if isinstance(exc, ModelLoadError):  # said of the model, when ONNX Runtime refuses it itself
            refuse_unloadable(model)
        raise InputError(str(exc)) from None
    if ui is not None:
        ui.info(f"int8: {result.reason}")
        for warning in result.warnings:
            ui.warn(f"int8: {warning}")
    return PrecisionArtifact(
        "int8", result.model, files=result.files, skipped=result.skipped, info=summary(result, options)
    )


def imported_cache(out_path: Path) -> Path | None:
    """The TensorRT cache ``calibrate --from-cache`` left beside the Q/DQ model ``out_path``: its
    ``<stem>.calib.cache`` with no ``<stem>.calib.json`` (a calibration writes both; the import
    writes the cache and removes an earlier calibration's report). None when there is none."""
    name = out_path.name
    stem = name[: -len(".int8.onnx")] if name.endswith(".int8.onnx") else Path(name).stem
    cache = out_path.with_name(f"{stem}.calib.cache")
    if cache.is_file() and not out_path.with_name(f"{stem}.calib.json").exists():
        return cache
    return None


def qdq_from_cache(
    model: Path, cache: Path, out_path: Path, target: Target
) -> tuple[list[str], dict[str, Any] | None]:
    """Write the Q/DQ model of ``model`` with the scales of the TensorRT calibration ``cache`` to
    ``out_path`` (placed and weight bits as ``target`` takes them, checked, written whole); returns
    the tensors the cache does not cover, left in float, and the record of the opset conversion
    per-channel Q/DQ needed ({from, to, reason, checked, not_checked: why it could not be checked},
    as an fp16 plan's ``opset_conversion``), or None where the model kept its opset."""
    import onnx

    from calibration.atomic import atomic_path
    from calibration.graphs import opset_of
    from calibration.trt_cache import cache_to_qdq
    from edgedeploy.onnxio import load_onnx, verify

    try:
        qdq, uncovered, unchecked = cache_to_qdq(
            model, cache, placement=placement_for(target), weight_bits=weight_bits_for(target)
        )
    except CalibrationError as exc:
        raise InputError(str(exc)) from None
    with atomic_path(out_path) as tmp:
        onnx.save(qdq, tmp)
        verify(tmp, source=model, what=f"the Q/DQ model from {cache.name}")
    before, after = opset_of(load_onnx(model, load_external_data=False)), opset_of(qdq)
    if not before or before == after:
        return uncovered, None
    conversion: dict[str, Any] = {"from": before, "to": after, "reason": "per-channel Q/DQ needs it"}
    conversion["checked"] = not unchecked
    if unchecked:
        conversion["not_checked"] = unchecked
    return uncovered, conversion


def qdq_conversion_notice(model: Path, conversion: Mapping[str, Any]) -> str:
    """The one line saying ``model`` was converted for its Q/DQ model (:func:`qdq_from_cache`)."""
    return (
        f"notice: converted {model.name} from opset {conversion['from']} to {conversion['to']} for "
        f"int8 (onnx.version_converter, {conversion_checked_words(conversion)}): {conversion['reason']}"
    )


@contextlib.contextmanager
def _kept_for_the_call(source: DataSource) -> Iterator[None]:
    """A loader script's feeds kept in a scratch folder while the calibration reads them, when no
    caller keeps them (``edgedeploy calibrate``): its key hashes them, then the pass reads them,
    and the script ran for each (a slow loader paid twice, a random one gave other data)."""
    if not source.hash_feeds or source.keep_in is not None:
        yield
        return
    try:
        with sources_opened_for_command() as opened:
            source.keep_in = opened.folder
            yield
    finally:
        source.forget_kept()


def summary(result: CalibrationResult, options: CalibrationOptions) -> dict[str, Any]:
    """What the manifest and the report record about an int8 artifact."""
    report = result.report_data
    worst = max(result.tensors, key=lambda t: t.clipped, default=None)
    return {
        "algorithm": options.algorithm_options().describe(),
        "placement": options.placement,
        "weight_bits": options.weight_bits,
        # auto's only: how its candidates were measured (the report says; None for other algorithms)
        "integer_kernels": (report.selection or {}).get("integer_kernels") if report else None,
        # auto's only: whether its weights are GPTQ-rounded (docs/design.md, "GPTQ weight rounding")
        "gptq_rounding": report.gptq_rounded() if report else None,
        "samples": result.samples,
        "synthetic": result.synthetic,
        "data": report.data if report else None,
        "key": result.key,
        "reused": result.reused,
        "reason": result.reason,
        "tensors": len(result.tensors),
        "quantized_nodes": len(report.quantized_nodes) if report else None,
        "excluded_nodes": report.excluded_nodes if report else [],
        "exclude_nodes_matched": report.exclude_nodes_matched if report else {},
        "worst_clipped": {"tensor": worst.name, "share": worst.clipped} if worst else None,
        "trt_cache": report.trt_cache if report else None,
        "report": result.report.name,
        "warnings": result.warnings,
        "seconds": round(result.seconds, 3),
    }
