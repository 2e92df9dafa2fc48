"""The build stage: fp32 ONNX -> precision artifact (fp16 / int8 ONNX) -> backend build output.

Precision is decided here on the CPU (docs/design.md, "Principles" 1); the backend only compiles
what it is given. The target is checked before any work starts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from calibration.errors import CalibrationError, LoaderFailed
from calibration.modelinfo import model_io
from calibration.qdq import int8_activations
from edgedeploy.backends import Backend, BuildOptions, BuildResult, resolve_backend
from edgedeploy.backends.trt_plan import refuse_values_tensorrt_lacks
from edgedeploy.errors import BudgetMissed, GateFailed, InputError, user_failure
from edgedeploy.fileio import atomic_path
from edgedeploy.onnxio import (
    copy_model,
    external_data_files,
    is_onnx_path,
    load_onnx,
    model_stem,
    onnx_stem,
    verify,
)
from edgedeploy.options import BuildRequest, option_name, sources_opened_for_command, user_names
from edgedeploy.stages.precision import PrecisionArtifact
from edgedeploy.stages.precision.emulate import MIXED, is_integer_op, onnx_precision
from edgedeploy.stages.precision.int8 import (
    imported_cache,
    int8_content,
    make_int8,
    placement_for,
    qdq_conversion_notice,
    qdq_from_cache,
    weight_bits_for,
)
from edgedeploy.stages.precision.mixed import int8_within_budget, make_fp16_checked
from edgedeploy.targets import Target
from edgedeploy.ui import QUIET, Ui


@dataclass
class BuildOutcome:
    precision: PrecisionArtifact
    build: BuildResult
    backend_note: str


def artifact_name(model: Path, precision: str) -> str:
    """``STEM.PRECISION.onnx``, STEM as :func:`edgedeploy.onnxio.model_stem` names it."""
    return f"{model_stem(model.name)}.{precision}.onnx"


Q_DQ = frozenset({"QuantizeLinear", "DequantizeLinear"})
MIXED_WORDS = "a mixed model (fp16 and fp32 layers, most of its heavy ones fp32), not an fp16 one"


def output_names(model: Path, precision: str) -> tuple[str, tuple[str, ...]]:
    """The names of a build's output files, ``STEM.PART.*``: their STEM, and their PARTs (the
    precision's, and an int8 build's calibration files, ``STEM.calib.*``)."""
    stem = artifact_name(model, precision).removesuffix(f".{precision}.onnx")
    return stem, ((precision, "calib") if precision == "int8" else (precision,))


def model_words(model: Path, precision: str) -> str:
    """``an fp16 model``, or the words for a mixed model taken as fp16 (its content says which)."""
    if precision == "fp16" and is_onnx_path(model) and precision_of_model(model) == MIXED:
        return MIXED_WORDS
    return f"an {precision} model"


def precision_of_model(model: Path) -> str:
    """What a model already is: int8 (integer ops), fp16 (fp16 weights), mixed (fp16 in it, most heavy
    layers fp32) or fp32, as profile and compare record it
    (:func:`edgedeploy.stages.precision.emulate.onnx_precision`)."""

    return onnx_precision(load_onnx(model, load_external_data=False))


# the integer ops of a dynamically quantized model (ONNX Runtime's quantize_dynamic), which no build
# of edgedeploy writes: such a model has no Q/DQ model beside it
DYNAMIC_QUANT_OPS = frozenset({"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"})


def refused_other_precision(model: Path, existing: str) -> str:
    """Why a build of another precision than ``existing`` (what ``model`` already is,
    :func:`precision_of_model`: a mixed model is taken as fp16 only) refuses it."""
    if existing == MIXED:
        return (
            f"{model.name} is {MIXED_WORDS}: build it with --precision fp16 to take it as it is, "
            "or start from the fp32 model"
        )
    return (
        f"{model.name} is already an {existing} model: build it with --precision {existing}, "
        "or start from the fp32 model"
    )


def check_int8_for_target(model: Path, target: Target) -> None:
    """InputError for an int8 model a GPU target's TensorRT cannot build as intended. TensorRT
    builds from Q/DQ pairs with int8 values and zero point 0 (docs/tensorrt-facts.md, "Q/DQ ONNX
    that TensorRT accepts"): not from ONNX Runtime's fused integer ops (a saved .ort.onnx, whose
    Q/DQ model the build wrote beside it), nor from another tool's integer ops (ConvInteger of a
    dynamically quantized model, which has no Q/DQ model), nor from uint8 activations (the
    placement calibrated for a CPU target)."""
    if not target.is_gpu:
        return
    proto = load_onnx(model, load_external_data=False)
    fused = sorted({n.op_type for n in proto.graph.node if is_integer_op(n.op_type)} - Q_DQ)
    if fused and onnx_stem(model.name).endswith(".ort") and not DYNAMIC_QUANT_OPS & set(fused):
        raise InputError(
            f"{model.name} holds ONNX Runtime's integer ops ({', '.join(fused)}), which TensorRT does not "
            f"build: give its Q/DQ model (NAME.int8.onnx), not ONNX Runtime's saved copy"
        )
    if fused:
        raise InputError(
            f"{model.name} was quantized by another tool with integer ops ({', '.join(fused)}), which "
            "TensorRT does not build: it takes Q/DQ models only (QuantizeLinear/DequantizeLinear); quantize "
            f"the fp32 original with edgedeploy (edgedeploy build FP32.onnx --precision int8 --target "
            f"{target.name}), or give a Q/DQ model"
        )
    if not int8_activations(proto):
        raise InputError(
            f"{model.name} quantizes activations to uint8, as calibrated for a CPU target; TensorRT on "
            f"{target.name} takes int8 Q/DQ: calibrate the fp32 model for it "
            f"(edgedeploy build FP32.onnx --precision int8 --target {target.name})"
        )


def _use_as_is(
    model: Path, precision: str, dest: Path, ui: Ui, data_option: str | None = None
) -> PrecisionArtifact:
    """A model that already is the precision asked for (a bundle's fp16 or Q/DQ ONNX) is built unchanged.
    ``data_option``: the option that gave calibration data (``--calib-data``), which is then not
    used, and said so once (a weight-only int8 model's activations are not calibrated by it).

    Its companions beside it come along: precision plan, TensorRT calibration cache, and what a
    report draws (fp16 ranges, calibration report, budget search; a matrix's bundles lacked them).
    The line that says it is built as it is names them: they are written into the output folder
    beside the artifact, which the command's output lines do not list.
    """

    base = model_stem(model.name)
    names = [f"{base}.{precision}.plan.json", f"{base}.calib.cache", f"{base}.{precision}.ranges.json"]
    names += [f"{base}.calib.json", f"{base}.{precision}.budget.json"]
    companions = [model.with_name(name) for name in names]
    files = copy_model(model, dest)  # with its external data
    verify(dest, source=model, companions=files[1:], what=model.name)
    brought = []
    for src in companions:
        target = dest.with_name(src.name)
        if src.is_file() and src.resolve() != target.resolve():
            with atomic_path(target) as tmp:
                shutil.copyfile(src, tmp)
        if src.is_file():
            files.append(target)
            brought.append(src.name)
    with_them = f", with {', '.join(brought)} from beside it" if brought else ""
    ui.info(f"{model.name} is already {model_words(model, precision)}: built as it is{with_them}")
    if data_option:
        content = int8_content(model) if precision == "int8" else None
        said = f"{data_option}: not used: {model.name} is already {model_words(model, precision)}"
        if content:
            said += f" ({content}); to calibrate on this data, build the fp32 model it was made from"
        ui.warn(said)
    return PrecisionArtifact(precision, dest, files, info={"as_is": True})


def make_precision(
    model: Path, request: BuildRequest, out_dir: Path, ui: Ui = QUIET, made_with_data: bool = False
) -> PrecisionArtifact:
    """Write the precision ONNX for ``request.precision`` into ``out_dir``.

    ``made_with_data``: ``model`` is the precision ONNX this request already made from the fp32 model
    (a matrix cell's build of its precision step's file), so its calibration data was used: not
    warned as unused, as it is for a user's model that was already of that precision.

    A top1 accuracy budget on a model without class scores is refused by the caller, once per model
    before any work (budget.refuse_top1_without_scores), not here for every precision and cell.
    A refusal that comes once files are written (the budget's search finds at its first measurement
    that a top1 bound cannot be measured on the data) leaves none of them (:func:`_nothing_left`)."""
    with _nothing_left(out_dir, *output_names(model, request.precision)):
        return _make_precision(model, request, out_dir, ui, made_with_data)


def _outputs_in(out_dir: Path, names: tuple[str, ...]) -> dict[Path, tuple[int, int]]:
    """The files of ``out_dir`` whose names start with one of ``names``, with their inode and mtime."""
    found: dict[Path, tuple[int, int]] = {}
    with suppress(OSError):
        for entry in os.scandir(out_dir):
            if entry.name.startswith(names) and entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found[Path(entry.path)] = (st.st_ino, st.st_mtime_ns)
    return found


@contextmanager
def _nothing_left(out_dir: Path, stem: str, parts: tuple[str, ...]) -> Iterator[None]:
    """On bad input (exit 2) raised in the block, remove the ``STEM.PART.*`` files of ``out_dir`` the
    block wrote (new, or written over: another inode or mtime), and the folders it made for them
    when they are left empty: bad input leaves no output, as a missed budget leaves no model
    (:func:`_not_left`). The files an earlier build wrote and this one reused stay as they were."""
    names = tuple(f"{stem}.{part}." for part in parts)
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    before = _outputs_in(out_dir, names)
    try:
        yield
    except Exception as exc:
        if isinstance(exc, GateFailed) or user_failure(exc) is None:
            raise  # a missed budget (exit 1) keeps what _not_left keeps; a bug keeps its traceback
        for path, stamp in _outputs_in(out_dir, names).items():
            if before.get(path) != stamp:
                with suppress(OSError):
                    path.unlink()
        for folder in made:  # the deepest first; one the user's files fill stays
            with suppress(OSError):
                folder.rmdir()
        raise


def _make_precision(
    model: Path, request: BuildRequest, out_dir: Path, ui: Ui, made_with_data: bool
) -> PrecisionArtifact:
    dest = out_dir / artifact_name(model, request.precision)
    existing = precision_of_model(model)
    if existing == MIXED and request.precision != "fp16":
        raise InputError(refused_other_precision(model, existing))
    existing = "fp16" if existing == MIXED else existing  # as it is, said so (model_words)
    if existing != "fp32":
        if existing != request.precision:
            raise InputError(refused_other_precision(model, existing))
        if existing == "int8":
            check_int8_for_target(model, request.target)
        out_dir.mkdir(parents=True, exist_ok=True)
        data = request.calibration.option("data") if request.calibration.data and not made_with_data else None
        return _use_as_is(model, existing, dest, ui, data)
    if request.precision == "fp32":
        _check_run_shapes(model, request)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = copy_model(model, dest)  # with its external data
        verify(dest, source=model, companions=files[1:], what=f"the fp32 copy of {model.name}")
        return PrecisionArtifact("fp32", dest, files)
    try:
        if request.precision == "fp16":
            return make_fp16_checked(model, dest, request, ui)
        if request.precision == "int8":
            artifact = _make_int8(model, dest, request, ui)
            if request.accuracy_budget:
                first = artifact.first_batch
                artifact = int8_within_budget(model, dest, artifact, request, ui)
                artifact.first_batch = first
            return artifact
    except BudgetMissed as exc:
        raise _not_left(exc, dest) from None
    raise InputError(
        f"precision '{request.precision}' is not built by edgedeploy yet; use fp32, fp16 or int8"
    )


def _check_run_shapes(model: Path, request: BuildRequest) -> None:
    """Refuse input shapes (``--input``) the fp32 artifact's run-once check cannot make random data
    of (a name the model lacks, another rank, a static dim they differ in), before anything is
    written, as the fp16 and int8 builds' random data refuses them: the check would drop them and
    run the artifact on dynamic dims of 1, which is what the shapes were given to avoid."""
    calib = request.calibration
    if not calib.shapes or calib.data:
        return
    try:
        calib.open(model_io(model)[0]).first_feed()
    except CalibrationError as exc:
        raise InputError(str(exc)) from None


def _not_left(exc: BudgetMissed, dest: Path) -> BudgetMissed:
    """``exc`` once the model that missed its budget is gone from ``dest`` (with its external data):
    left under the artifact's name, a later ``bundle`` shipped it as built and a run's workdir kept
    it, as trtexec and Polygraphy leave no output for a failed check. The search's steps, the plan
    and the calibration's records stay beside it, to read why."""
    removed = [dest, *external_data_files(dest)] if dest.is_file() else []
    for path in removed:
        path.unlink(missing_ok=True)
    said = f"no {dest.name} is left in {dest.parent}: a model that misses its budget is not built"
    return BudgetMissed(f"{exc}; {said}", exc.steps)


def _make_int8(model: Path, dest: Path, request: BuildRequest, ui: Ui) -> PrecisionArtifact:
    calib = request.calibration
    imported = imported_cache(dest)
    if imported is not None and not calib.data:
        return _int8_from_imported(model, dest, imported, request, ui)
    inputs, _ = model_io(model)
    source = calib.open(inputs)  # first: data it refuses is the only line, not said after this warning
    if not calib.data:
        ui.warn(
            f"no {calib.option('data')} given: calibrating on seeded random data; the result is synthetic "
            "and its accuracy says little about real inputs"
        )
    for note in calib.notes(source):
        ui.warn(note)
    artifact = make_int8(
        model,
        dest,
        target=request.target,
        source=source,
        algorithm=calib.algorithm,
        percentile=calib.percentile,
        exclude_nodes=calib.exclude_nodes,
        exclude_ops=calib.exclude_ops,
        trt_version=calib.trt_version,
        force=bool(request.options.get("force")),  # --force redoes the calibration too
        ui=ui,
    )
    if imported is not None:  # said once the data is read: data it refuses is the only line
        ui.warn(
            f"{imported}: the TensorRT cache calibrate --from-cache imported was not used: calibrated on "
            f"{calib.option('data')} {calib.data} instead, which replaced it"
        )
    if calib.data:  # the batch the calibration read (or its key's hash did); read now when it reused one
        with suppress(CalibrationError):
            artifact.first_batch = source.first_feed()
    return artifact


def _int8_from_imported(
    model: Path, dest: Path, cache: Path, request: BuildRequest, ui: Ui
) -> PrecisionArtifact:
    """The int8 model from the TensorRT cache ``calibrate --from-cache`` imported beside ``dest``,
    placed for this build's target, where no calibration data is given: calibrating on random data
    replaced the scales the user had just imported (and removed or overwrote the cache)."""
    if request.accuracy_budget:
        named = option_name("build", "accuracy_budget", request.calibration.from_config)
        raise InputError(
            f"{named} {request.accuracy_budget} cannot be searched on {cache} (imported by calibrate "
            f"--from-cache), which has no calibration report: give {request.calibration.option('data')} "
            "to calibrate instead, or build without the budget"
        )
    uncovered, conversion = qdq_from_cache(model, cache, dest, request.target)
    if conversion is not None:
        ui.info(qdq_conversion_notice(model, conversion))
    ui.info(
        f"int8: scales from {cache} (imported by calibrate --from-cache), not calibrated again; give "
        f"{request.calibration.option('data')} to calibrate instead"
    )
    if uncovered:
        left = ", ".join(uncovered[:5])
        ui.warn(f"int8: {len(uncovered)} tensor(s) not in the cache were left in float: {left}")
    info: dict[str, Any] = {"from_cache": str(cache), "left_in_float": uncovered}
    if conversion is not None:
        info["opset_conversion"] = conversion
    info |= {"placement": placement_for(request.target), "weight_bits": weight_bits_for(request.target)}
    return PrecisionArtifact("int8", dest, files=[dest, cache], info=info)


CPU_OPTIONS = frozenset({"threads", "force"})  # the options ONNX Runtime uses; the rest are TensorRT's
# the TensorRT options a bundle records for its device's engine build (manifest "build"): used by a
# GPU target's bundle whichever backend builds here
BUNDLED_OPTIONS = frozenset({"profiles", "tf32"})


def check_backend_options(model: Path, request: BuildRequest, backend: str, ui: Ui) -> None:
    """Refuse bad TensorRT option values on any backend; TensorRT options on ONNX Runtime are refused
    when the user chose it, and named in one warning when ``auto`` fell back to it, or (a CPU
    target's, whose runtime it is) when they do not apply."""
    from edgedeploy.backends.trt_plan import check_option_values

    options = BuildOptions(precision=request.precision, target=request.target, **request.options)
    check_option_values(model, options)
    unused = user_names([k for k, v in request.options.items() if k not in CPU_OPTIONS and v is not None])
    if backend != "onnxruntime" or not unused:
        return
    names = ", ".join(unused)
    if request.backend == "onnxruntime":
        raise InputError(
            f"{names}: TensorRT options, unused by the onnxruntime backend; drop them or build with TensorRT"
        )
    if request.target.kind == "cpu":  # its runtime is ONNX Runtime: nothing falls back, no engine
        ui.warn_once(
            f"{names}: TensorRT options, which do not apply to {request.target.name}: "
            "a CPU target builds with ONNX Runtime"
        )
        return
    kept = ""
    if "profiles" in unused:
        kept = " (a bundle keeps the shape profiles for the device's engine build)"
    message = f"{names}: TensorRT options, unused here (the build falls back to ONNX Runtime){kept}"
    ui.warn_once(message)  # once per run, not once per precision


def warn_crashing_optimizers(artifacts: list[Path], ui: Ui) -> None:
    """One warning naming the artifacts that kill ONNX Runtime at its default options (the fp16
    build keeps the pattern in fp32; a model float16 before the build keeps it, see docs/design.md,
    "ONNX Runtime crashes on some fp16 graphs"), and how to load them: edgedeploy's sessions do."""
    from edgedeploy.backends.onnxruntime import crashing_optimizers

    found = {path.name: names for path in dict.fromkeys(artifacts) if (names := crashing_optimizers(path))}
    if not found:
        return
    names = sorted({n for listed in found.values() for n in listed})
    them = "them" if len(found) > 1 else "it"
    ui.warn(
        f"{' and '.join(found)}: ONNX Runtime dies (SIGSEGV) loading {them} at its default optimization "
        f"level; load {them} with disabled_optimizers={names} in the session (Python: InferenceSession("
        f"path, disabled_optimizers={names})) or at graph_optimization_level ORT_ENABLE_EXTENDED"
    )


def data_batch(model: Path, request: BuildRequest, precision: PrecisionArtifact) -> dict[str, Any] | None:
    """The first batch of the user's calibration data, which the built artifact is run on once:
    random inputs can fail a model that its data runs (silero-vad's reflect Pad of a 1-sample
    input), and the artifact was called "loaded, not run" although the calibration had just run
    the model on that data. The batch ``precision``'s step read, when it read the data (opened
    again, an image folder's headers were read and a loader script run a second time); else the
    data is opened here for ``model``'s inputs (the fp32 model's, as the precision step opened it:
    an fp16 model without keep_io_types takes float16, which the check casts to). None without
    data, or when the data does not feed the model (a precision that did not read it, whose build
    warned so): the ``--input`` shapes are used then. A loader script that fails is refused
    (:class:`~calibration.errors.LoaderFailed`), not passed over."""
    if precision.first_batch is not None:
        return precision.first_batch
    if not request.calibration.data:
        return None
    try:
        return request.calibration.open(model_io(model)[0]).first_feed()
    except LoaderFailed:  # the user's script failed: not data that does not fit, passed over
        raise
    except CalibrationError:
        return None


def build(
    model: Path, request: BuildRequest, out_dir: Path, ui: Ui = QUIET, made_from: Path | None = None
) -> BuildOutcome:
    """Check the target, make the precision artifact, and compile it with the chosen backend.

    ``made_from``: the fp32 model that ``model``, a precision ONNX, was made from with this
    request's data (a matrix cell's build of its precision task's file): the data is not said
    unused (:func:`make_precision`'s ``made_with_data``), and its first batch is opened for the
    fp32 model's inputs, as the precision step opened it (and its feeds were kept for), not for
    the float16 ones of an fp16 model made without keep_io_types.

    The calibration data is opened once for the build's every read (the int8 key's hash of a
    loader script's feeds, the calibration, a budget, the fp16 analysis), unless the caller
    shares one opening among several builds (``request.calibration.opened``)."""
    if request.calibration.data and request.calibration.opened is None:
        with sources_opened_for_command() as opened:
            shared = replace(request, calibration=replace(request.calibration, opened=opened))
            return _build(model, shared, out_dir, ui, made_from)
    return _build(model, request, out_dir, ui, made_from)


def _build(model: Path, request: BuildRequest, out_dir: Path, ui: Ui, made_from: Path | None) -> BuildOutcome:
    request.target.check_precision(request.precision)
    request.target.check_dla(request.options.get("dla_core"))
    if request.accuracy_budget and request.precision not in ("fp16", "int8"):
        raise InputError(
            f"--accuracy-budget applies to fp16 and int8 builds; {request.precision} is the reference itself"
        )
    if request.backend == "tensorrt" or (request.backend == "auto" and request.target.is_gpu):
        # auto builds with TensorRT wherever it is present: refused alike on every machine
        instead = "build it with --backend onnxruntime to run it on ONNX Runtime, or for a CPU target"
        refuse_values_tensorrt_lacks(model, request.target.name, instead)
    backend, note = resolve_backend(request.backend, request.target.is_gpu)
    check_backend_options(model, request, backend.name, ui)
    backend.check_options(
        BuildOptions(precision=request.precision, target=request.target, **request.options), model
    )
    # bad input in the backend's build (a parser refusing an op, ONNX Runtime unable to load the
    # artifact) leaves none of the files this build wrote, as the precision step's own refusals
    with _nothing_left(out_dir, *output_names(model, request.precision)):
        return _precision_and_backend(model, request, out_dir, ui, made_from, backend, note)


def _precision_and_backend(
    model: Path,
    request: BuildRequest,
    out_dir: Path,
    ui: Ui,
    made_from: Path | None,
    backend: Backend,
    note: str,
) -> BuildOutcome:
    precision = make_precision(model, request, out_dir, ui, made_with_data=made_from is not None)
    ui.info_once(note, again=note.split(" (")[0] + " (as above)" if " (" in note else "")
    extra = dict(request.options)
    for path in precision.files:
        if path.name.endswith(".plan.json"):
            extra.setdefault("precision_plan", path)
        elif path.name.endswith(".cache") and request.precision == "int8":
            extra.setdefault("calibration_cache", path)
    options = BuildOptions(
        precision=request.precision,
        target=request.target,
        shapes=dict(request.calibration.shapes),
        feed=data_batch(made_from or model, request, precision),
        **extra,
    )
    with ui.progress(f"{backend.name} build ({request.precision})") as advance:
        result = backend.build(precision.path, options, out_dir)
        advance(1.0)
    if backend.name == "onnxruntime":
        warn_crashing_optimizers([precision.path, result.artifact], ui)
    return BuildOutcome(precision=precision, build=result, backend_note=note)
