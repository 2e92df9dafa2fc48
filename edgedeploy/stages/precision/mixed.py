"""Mixed precision as ``build`` runs it: range analysis -> fp32 islands -> fp16 artifact, and the
accuracy-budget search for fp16 and INT8 artifacts.

Kept apart from build.py so the build stage stays one readable function; everything here
writes its decisions beside the artifact: ``<stem>.fp16.ranges.json`` (what overflows and why),
the precision plan ``<stem>.fp16.plan.json`` (per node precision and reason, from make_fp16),
and ``<stem>.<precision>.budget.json`` (sensitivities and every step of the budget search).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from calibration.errors import CalibrationError, NothingToQuantize
from calibration.feeds import feed_rows
from calibration.modelinfo import TensorSpec, graph_io, model_io
from calibration.qdq import WEIGHTED_OPS
from calibration.report import load_report
from calibration.sources import DataSource, Feed
from edgedeploy.errors import BudgetMissed, GateFailed, InputError, naming_guessed_dims
from edgedeploy.fileio import (
    RECORD_DIGEST,
    atomic_write_json,
    intact_record,
    scratch_beside,
    sealed,
    sha256_file,
    sha256_json,
)
from edgedeploy.onnxio import load_onnx, refuse_unloadable, save_onnx
from edgedeploy.options import BuildRequest, Fp16Options, option_name
from edgedeploy.results import to_jsonable
from edgedeploy.stages.precision import PrecisionArtifact
from edgedeploy.stages.precision.analysis import (
    OutputRecorder,
    RangeReport,
    free_first_dim,
    load_for_analysis,
    report_json,
    split_batches,
)
from edgedeploy.stages.precision.budget import (
    AccuracyBudget,
    Fp16Reference,
    fp16_budget,
    fp16_reference,
    int8_budget,
    measured_figure,
)
from edgedeploy.stages.precision.fp16 import (
    blocked_ops,
    check_fp32_ops,
    conversion_checked_words,
    make_fp16,
    match_fp32_nodes,
    may_convert,
    opset_conversion,
    runtime_for,
    subgraph_nodes_of,
)
from edgedeploy.stages.precision.int8 import emulate_integer_for, make_int8
from edgedeploy.stages.precision.islands import plan_islands, release_measured
from edgedeploy.ui import QUIET, Ui

SYNTHETIC_SAMPLES = 32
EVAL_SAMPLES = 256  # at most this many samples to measure each budget step on
# at most this many of the analysed samples try a flagged node back in fp16; each plan measured
# runs the emulated model on all of them (magika: half its fp16 build time at 16). 8 and 16 gave
# byte-identical artifacts on the seven real models of benchmarks/real_models.py
RELEASE_SAMPLES = 8
# samples per run of the fp16 range analysis, which fetches every float tensor of the run: a large
# --batch-size is read in pieces of this many (the release then runs on 2 of them, as it always has)
ANALYSIS_ROWS = 4


def analysis_source(
    model: Path, request: BuildRequest, ui: Ui, purpose: str, inputs: list[TensorSpec] | None = None
) -> DataSource:
    """The --calib-data source (or seeded random data, with a warning) for analysis and budgets;
    ``inputs``: the model's inputs when the caller has read them already."""

    calib = request.calibration
    try:
        inputs = inputs if inputs is not None else model_io(model)[0]
        source = replace(calib, samples=calib.samples if calib.data else SYNTHETIC_SAMPLES).open(inputs)
        if source.keep_in is not None:  # a loader script read once to its end, not first in part
            source.first_feed()  # (the analysis reads some samples, its key all of them)
    except CalibrationError as exc:  # the only line: not said after the warning below
        raise InputError(str(exc)) from None
    if not calib.data:
        ui.warn(
            f"no {calib.option('data')} given: the {purpose} runs on seeded random data; ranges and "
            "accuracy on real inputs may differ"
        )
    for note in calib.notes(source):
        ui.warn(note)
    return source


def _feeds(
    source: DataSource, limit: int = EVAL_SAMPLES, *, unmade: Callable[[str], None] | None = None
) -> list[Feed]:
    """Up to ``limit`` samples of ``source``. With ``unmade``, random data the model's inputs cannot
    be made from (a sequence input, an input of no rank) gives no feeds, the reason told to
    ``unmade`` (the caller skips the analysis), instead of an error."""

    feeds: list[Feed] = []
    seen = 0
    try:
        for feed in source:
            feeds.append(feed)
            seen += feed_rows(feed, source.inputs)
            if seen >= limit:
                break
    except CalibrationError as exc:
        if unmade is not None and source.synthetic:
            unmade(str(exc))
            return []
        raise InputError(str(exc)) from None
    return feeds


def _sidecar(dest: Path, suffix: str) -> Path:
    return dest.with_name(dest.name.removesuffix(".onnx") + suffix)


def _read_once(model: Path) -> tuple[onnx.ModelProto | None, bytes | None]:
    """The model as the analysis and the conversion both read it, and the file's bytes, when its
    weights are in the file (a 90 MB model takes a quarter of a second to parse and more to
    serialize again); (None, None) for one with external data, which each reads in its own way."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        content = model.read_bytes()
        loaded = onnx.load_model_from_string(content)
        if not loaded.graph.node:
            raise ValueError("no nodes")
        data: bytes | None = content
    except Exception:  # the reader's own message for a missing, empty, corrupt or truncated file
        loaded, data = load_onnx(model, load_external_data=False), None
    if any(uses_external_data(t) for t in _get_all_tensors(loaded)):
        return None, None
    return loaded, data


def _sha256_aside(content: bytes | None) -> Callable[[], str] | None:
    """The sha256 of the model file's bytes (the precision plan records it), hashed by a second
    thread while the build goes on: hashlib lets go of the GIL, so on a second core a 90 MB model's
    hash costs the build nothing instead of a tenth of a second; None without the bytes."""
    if content is None:
        return None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgedeploy-sha256")
    future = pool.submit(lambda: hashlib.sha256(content).hexdigest())
    pool.shutdown(wait=False)  # the thread ends with its one task
    return future.result


def _for_analysis(loaded: onnx.ModelProto | None) -> onnx.ModelProto | None:
    """``loaded`` for load_for_analysis, which prepares it in place: as it is, unless it lists
    initializers among its graph inputs, which the analysis drops and the conversion keeps."""
    if loaded is None:
        return None
    inits = {i.name for i in loaded.graph.initializer}
    if not any(vi.name in inits for vi in loaded.graph.input):
        return loaded
    copy = onnx.ModelProto()
    copy.CopyFrom(loaded)
    return copy


def _one_sample(feed: Feed, inputs: list[TensorSpec]) -> Feed:
    """The artifact check runs the artifact once: on the first sample of ``feed`` when every input
    has a free first (batch) dimension, else on the feed as it is."""
    arrays = list(feed.values())
    free = bool(inputs) and all(spec.shape and not isinstance(spec.shape[0], int) for spec in inputs)
    if not free or not arrays or any(getattr(a, "ndim", 0) == 0 for a in arrays):
        return feed
    rows = {int(a.shape[0]) for a in arrays}
    return {k: v[:1] for k, v in feed.items()} if len(rows) == 1 and rows != {1} else feed


def nonfinite_layer_weights(model: onnx.ModelProto, report: RangeReport) -> str | None:
    """One line naming the weights of Conv, ConvTranspose, Gemm and MatMul nodes that hold NaN or
    Inf, which only the precision plan listed (as its readers' reason to stay fp32): the fp32 model
    computes NaN/Inf with them too. A -inf attention mask read by Add or Where is left alone."""
    ops = {node.name: node.op_type for node in model.graph.node}
    found = [
        f"'{w.name}' of {', '.join(w.consumers)} holds {w.stats.nonfinite} NaN/Inf value(s)"
        for w in report.weights_at_risk()
        if w.stats.nonfinite and any(ops.get(c) in WEIGHTED_OPS for c in w.consumers)
    ]
    if not found:
        return None
    return (
        f"weight {'; '.join(found[:3])}" + (f" (and {len(found) - 3} more)" if len(found) > 3 else "")
        + ": not finite, so the fp32 model computes NaN/Inf too (the nodes reading it stay fp32); "
        "fix the model's weights"
    )  # fmt: skip


def make_fp16_checked(model: Path, dest: Path, request: BuildRequest, ui: Ui = QUIET) -> PrecisionArtifact:
    """fp16 artifact with automatic fp32 islands (and the accuracy budget, when asked).

    A model below opset 6, where the converter's Casts cannot be written, or below 7 where ONNX
    Runtime cannot load it (an opset-6 Gemm), is built from its checked conversion to opset 13
    (:func:`opset_conversion`), said so: saved under its own name in a
    scratch folder beside ``dest``, which every step reads in place of ``model``. The ops kept in
    fp32 whatever their ranges are those the runtime that runs the artifact cannot run in fp16
    (TensorRT for a GPU target on any backend, ONNX Runtime's CPU provider for a CPU target:
    :func:`runtime_for`, :func:`blocked_ops`)."""

    options = replace(request.fp16, runtime=runtime_for(request.target))
    loaded, raw = _read_once(model)
    digest = _sha256_aside(raw)
    del raw
    # a typo in --fp32-ops or --fp32-nodes is refused before the analysis writes anything
    early = loaded if loaded is not None else load_onnx(model, load_external_data=False)
    check_fp32_ops(options.fp32_ops, early)
    options = match_fp32_nodes(options, early, model)  # a name the model repeats: all its nodes
    conversion = _fp16_conversion(model, early, loaded, ui)
    del early
    if conversion is None:
        return _fp16_checked(model, dest, request, options, ui, loaded, digest)
    converted, conversion_info = conversion
    dest.parent.mkdir(parents=True, exist_ok=True)
    with scratch_beside(dest, "opset") as folder:
        scratch = save_onnx(converted, folder / model.name)
        return _fp16_checked(
            scratch,
            dest,
            request,
            options,
            ui,
            converted if loaded is not None else None,
            digest or (lambda: sha256_file(model)),
            conversion_info,
            model,
        )


def _fp16_conversion(
    model: Path, early: onnx.ModelProto, loaded: onnx.ModelProto | None, ui: Ui
) -> tuple[onnx.ModelProto, dict[str, Any]] | None:
    """How an fp16 build converts ``model`` before anything else (:func:`opset_conversion`, on the
    model with its weights: ``loaded`` where the caller holds it), said in one notice line; None
    where it keeps its opset, decided on ``early`` (read without its weights) for most models."""
    if not may_convert(early):
        return None
    whole = loaded if loaded is not None else load_onnx(model)  # with its external data
    conversion = opset_conversion(whole, model.name)
    if conversion is not None:
        ui.info(_conversion_notice(model, conversion[1]))
    return conversion


def _conversion_notice(model: Path, conversion: Mapping[str, Any]) -> str:
    """The one line saying ``model`` is converted before fp16 (:func:`opset_conversion`)."""
    return (
        f"notice: converted {model.name} from opset {conversion['from']} to {conversion['to']} "
        f"for fp16 (onnx.version_converter, {conversion_checked_words(conversion)}): {conversion['reason']}"
    )


def fp16_analysis_model(model: Path, ui: Ui = QUIET) -> onnx.ModelProto:
    """The model an fp16 build of ``model`` analyses, prepared as its analysis prepares it
    (:func:`load_for_analysis`): the file itself, or where the build converts it first
    (:func:`opset_conversion`), that conversion, said in the build's notice line. ``analyze`` reads
    it, so that its node names and counts are the build plan's."""
    early = load_onnx(model, load_external_data=False)
    conversion = _fp16_conversion(model, early, None, ui)
    return load_for_analysis(model, early if conversion is None else conversion[0])


def _fp16_checked(
    model: Path,
    dest: Path,
    request: BuildRequest,
    options: Fp16Options,
    ui: Ui,
    loaded: onnx.ModelProto | None,
    digest: Callable[[], str] | None,
    conversion: dict[str, Any] | None = None,
    user_file: Path | None = None,
) -> PrecisionArtifact:
    """:func:`make_fp16_checked` on ``model`` (its ``options`` matched to it; ``loaded``, ``digest``:
    see :func:`_read_once` and :func:`_sha256_aside`), or on its conversion (``conversion``: how,
    ``user_file``: the user's file, which the range report names)."""
    files: list[Path] = []
    info: dict[str, Any] = {}
    source: DataSource | None = None
    arrays: dict[str, np.ndarray] = {}  # the weights as the analysis reads them, for the converter
    halves: dict[str, np.ndarray] = {}  # and as the release's emulation rounds them to float16
    # the range analysis' report: written beside the fp16 model once that is, never without it
    pending: tuple[Path, Any] | None = None
    inputs = graph_io(loaded)[0] if loaded is not None else model_io(model)[0]
    if not inputs and not request.accuracy_budget:
        # its outputs are constants: nothing to run an analysis on, and the artifact check runs it as is
        ui.info("the model has no inputs: fp16 range analysis skipped (its outputs are constants)")
    elif request.fp16_analysis or request.accuracy_budget:
        source = analysis_source(model, request, ui, "fp16 range analysis", inputs)
    feed = None
    first: list[Feed] = []
    if source is not None:
        calib = request.calibration

        def skipped(why: str) -> None:
            if request.accuracy_budget:  # the budget is measured on the same data: refused, not skipped
                raise InputError(_unmeasured_budget(request, why))
            ui.warn(f"fp16 range analysis skipped: {why}")

        # random data the model's inputs cannot be made from skips the analysis, which the build does
        # not need; input shapes the user gave (--input) that the model refuses are refused, as the
        # int8 build and compare refuse them
        first = _feeds(source, 1, unmade=None if calib.data or calib.shapes else skipped)
        feed = _one_sample(first[0], inputs) if first else None
        if feed is None:
            source = None  # seeded random data the model cannot be fed (said by skipped): no analysis
    if request.fp16_analysis and source is not None:
        try:
            with ui.progress("fp16 range analysis") as advance, naming_guessed_dims(source.fed_as_one):
                analysed = load_for_analysis(model, _for_analysis(loaded))
                # the release below runs on the first samples the analysis read, against the fp32
                # outputs the analysis pass computed on them. The analysis reads every sample it
                # is given (up to --calib-samples): a later sample's overflow is the user's too
                recorder = OutputRecorder([o.name for o in analysed.graph.output], RELEASE_SAMPLES)
                data = split_batches(source, ANALYSIS_ROWS) if free_first_dim(analysed) else source
                auto, report = plan_islands(
                    analysed,
                    recorder.wrap(data),
                    data_description=source.describe(),
                    observers=[recorder],
                    arrays=arrays,
                    name=(user_file or model).name,
                )
                report.model = str(user_file or model)
                advance(0.5)
                # a rule's island stays only where emulated fp16 measurably changes the outputs
                feeds, reference = recorder.batches()
                auto, released = release_measured(
                    analysed, auto, report, feeds, reference=reference, arrays=arrays, halves=halves,
                    blocked_ops=set(blocked_ops(analysed, options.runtime)),
                )  # fmt: skip
                advance(1.0)
        except InputError as exc:
            refuse_unloadable(model)  # a model ONNX Runtime refuses itself: said of it, with no analysis
            if not source.synthetic:
                raise
            if request.accuracy_budget:  # the budget would run the model on the same data
                raise InputError(_unmeasured_budget(request, str(exc))) from None
            ui.warn(
                f"fp16 range analysis skipped: {exc}; give {request.calibration.option('data')} with "
                "real inputs to keep overflowing layers in fp32"
            )
            # built as without an analysis, by the one conversion below: no islands, none of the
            # weights it read, no first batch on data the model cannot run (and no budget: refused above)
            source, first = None, []
            arrays.clear()
            halves.clear()
        else:
            options = replace(options, auto_fp32_nodes={**auto, **options.auto_fp32_nodes})
            at_risk = report.tensors_at_risk()
            # an If or Loop kept in fp32 keeps its branches too: the precision plan lists those nodes
            inside = [n for n in subgraph_nodes_of(analysed.graph, set(auto), set()) if n not in auto]
            named = options.fp32_nodes or options.fp32_ops
            ui.info(
                f"fp16 range analysis on {report.samples} samples: {len(at_risk)} tensor(s) and "
                f"{len(report.weights_at_risk())} weight(s) at risk; {len(auto)} node(s) kept in fp32"
                + (f" and the {len(inside)} inside their subgraphs" if inside else "")
                + (" by it, besides those --fp32-nodes/--fp32-ops name" if named else "")
                + (f" ({len(released)} more flagged, released: no measurable effect)" if released else "")
            )
            if broken := nonfinite_layer_weights(analysed, report):
                ui.warn(broken)
            report.notes.extend(released)
            ranges = _sidecar(dest, ".ranges.json")  # written once the fp16 model is (below)
            pending = (ranges, to_jsonable(report_json(report)))
            files.append(ranges)
            info.update(
                {
                    "range_analysis": report.summary(),
                    "auto_fp32_nodes": len(auto),
                    "released_fp32_nodes": len(released),
                    "ranges": ranges.name,
                }
            )
    budget_data = None
    if request.accuracy_budget and source is not None and not request.fp16_analysis:
        # the analysis, which runs the model on every sample the budget reads, did not: the budget's
        # reference run is made now, so that data the model refuses is refused before any file is written
        budget_data = _budget_reference(model, source, request)
    try:
        artifact = _convert(
            model,
            dest,
            request,
            options,
            feed,
            files,
            info,
            ui,
            source,
            loaded,
            digest,
            arrays,
            halves,
            conversion=conversion,
            budget_data=budget_data,
        )
    except GateFailed:  # the fp16 model was written: its ranges go beside it
        if pending is not None:
            atomic_write_json(*pending)
        raise
    if pending is not None:
        atomic_write_json(*pending)
    if first and request.calibration.data:  # the build runs its artifact on it (not on random data)
        artifact.first_batch = first[0]
    return artifact


def _convert(
    model: Path,
    dest: Path,
    request: BuildRequest,
    options: Fp16Options,
    feed: Feed | None,
    files: list[Path],
    info: dict[str, Any],
    ui: Ui,
    source: DataSource | None = None,
    loaded: onnx.ModelProto | None = None,
    digest: Callable[[], str] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    halves: dict[str, np.ndarray] | None = None,
    conversion: dict[str, Any] | None = None,
    budget_data: Fp16Reference | None = None,
) -> PrecisionArtifact:
    """The fp16 model (and the budget's search on ``source``, when asked; ``budget_data``: its
    samples, the fp32 model and its outputs on them, when :func:`_budget_reference` ran them already)."""
    with ui.progress("fp16 conversion") as advance:
        artifact = make_fp16(
            model,
            dest,
            options,
            feed=feed,
            loaded=loaded,
            source_sha256=digest,
            arrays=arrays,
            halves=halves,
            opset_conversion=conversion,
        )
        advance(1.0)
    # the whole count, as the plan and the build's JSON give it: the analysis line above counts the
    # nodes kept for their ranges, and the converter keeps more by rule (ops fp16 cannot take)
    integer = int(artifact.info.get("nodes_integer", 0))
    ui.info(
        f"fp16 model: {artifact.info['nodes_fp32']} of {artifact.info['nodes_total']} node(s) kept in fp32"
        + (f", {integer} integer-only (no float tensor to convert)" if integer else "")
        + f" (why, per node: {dest.name.removesuffix('.onnx')}.plan.json)"
    )
    for name, why in dict(artifact.info.get("control_flow_fp32", {})).items():
        ui.info(f"fp16 model: '{name}' kept in fp32 with its bodies: {why}")
    float64 = int(artifact.info.get("nodes_float64", 0))
    if float64 and float64 + integer + int(artifact.info["nodes_fp32"]) >= int(artifact.info["nodes_total"]):
        ui.warn(
            f"{model.name} computes in float64 ({float64} node(s)): the fp16 conversion changes float32 "
            "only, so nothing of it runs in fp16; export the model in float32 for an fp16 build"
        )
    if request.accuracy_budget and source is not None:
        artifact, budget_file, budget_info = _fp16_budget(
            model, dest, artifact, options, request, source, ui, digest, conversion, budget_data
        )
        files.append(budget_file)
        info.update(budget_info)
    artifact.files.extend(files)
    artifact.info.update(info)
    if request.accuracy_budget:
        _raise_unless_met(info, dest.parent)
    return artifact


def _fp16_budget(
    model: Path,
    dest: Path,
    artifact: PrecisionArtifact,
    options: Fp16Options,
    request: BuildRequest,
    source: DataSource,
    ui: Ui,
    digest: Callable[[], str] | None = None,
    conversion: dict[str, Any] | None = None,
    budget_data: Fp16Reference | None = None,
) -> tuple[PrecisionArtifact, Path, dict[str, Any]]:
    import json

    assert request.accuracy_budget is not None
    budget = AccuracyBudget.parse(request.accuracy_budget)
    plan = json.loads(artifact.files[1].read_text())
    base = [e["node"] for e in plan["nodes"] if e["precision"] == "fp32"]
    feeds = budget_data.feeds if budget_data is not None else _feeds(source)
    with ui.progress(f"accuracy budget {budget}") as advance:
        result = fp16_budget(
            model, base, budget, feeds, keep_io_types=options.keep_io_types, progress=ui.info,
            runtime=options.runtime, reference=budget_data,
            said=option_name("build", "accuracy_budget", request.calibration.from_config),
        )  # fmt: skip
        advance(1.0)
    if result.met and result.kept and not result.everything:
        extra = {n: f"accuracy budget {budget}: sensitive layer" for n in result.kept}
        options = replace(options, auto_fp32_nodes={**options.auto_fp32_nodes, **extra})
        artifact = make_fp16(model, dest, options, source_sha256=digest, opset_conversion=conversion)
    path = atomic_write_json(_sidecar(dest, ".budget.json"), to_jsonable(result))
    info = _budget_info(result, path)
    if result.everything:  # met only with every node in fp32: no fp16 model meets it
        info["accuracy_budget"]["everything_fp32"] = True
    return artifact, path, info


def _unmeasured_budget(request: BuildRequest, why: str) -> str:
    """The one line refusing an accuracy budget that cannot be measured: the model does not run on
    the data it would be measured on (``why``). Built without it, the artifact would be said to
    be built with no word that the budget the user asked for was never applied."""
    calib = request.calibration
    named = option_name("build", "accuracy_budget", calib.from_config)
    data = "seeded random data" if not calib.data else f"{calib.option('data')} {calib.data}"
    return (  # the remedy before ONNX Runtime's reason, which the one-line limit may cut
        f"{named} {request.accuracy_budget} cannot be measured on {data}, which the model does not run "
        f"on: give {calib.option('data')} with inputs it runs on, or build without the budget ({why})"
    )


def _budget_reference(model: Path, source: DataSource, request: BuildRequest) -> Fp16Reference:
    """The fp16 budget's samples of ``source``, the fp32 model and its outputs on them, or the one
    line of :func:`_unmeasured_budget` when the model does not run on them (or ONNX Runtime cannot
    load it: said of the model)."""
    feeds = _feeds(source)
    try:
        with naming_guessed_dims(source.fed_as_one):
            return fp16_reference(model, feeds)
    except InputError as exc:
        refuse_unloadable(model)
        raise InputError(_unmeasured_budget(request, str(exc))) from None


def _budget_info(result: Any, path: Path) -> dict[str, Any]:
    return {
        "accuracy_budget": {
            "budget": result.budget,
            "met": result.met,
            "kept": result.kept,
            "reached": result.steps[-1].measured,
            "steps": len(result.steps),
            "cost": {
                "measurements": result.measurements,
                "probe_measurements": result.probe_measurements,
                "seconds": round(result.seconds, 2),
                "ranking_seconds": round(result.ranking_seconds, 2),
                "ranking": result.ranking,
            },
            "file": path.name,
        }
    }


def _raise_unless_met(info: dict[str, Any], dest: Path) -> None:
    """GateFailed naming the steps file (in ``dest``) when the budget's search fell short."""
    b = info.get("accuracy_budget")
    if b and b["met"] and b.get("everything_fp32"):
        raise BudgetMissed(
            f"accuracy budget {b['budget']} is met only with every node left in fp32, so no fp16 model "
            f"meets it; build fp32, or loosen the budget (steps in {dest / b['file']})",
            dest / b["file"],
        )
    if b and not b["met"]:
        reached = ", ".join(f"{k} {measured_figure(v)}" for k, v in b["reached"].items() if v is not None)
        raise BudgetMissed(
            f"accuracy budget {b['budget']} is not met even with all {len(b['kept'])} candidate "
            f"layers in higher precision ({reached}); steps in {dest / b['file']}",
            dest / b["file"],
        )


def int8_within_budget(
    model: Path, dest: Path, artifact: PrecisionArtifact, request: BuildRequest, ui: Ui = QUIET
) -> PrecisionArtifact:
    """Leave the most sensitive quantized layers unquantized until the accuracy budget is met."""

    assert request.accuracy_budget is not None
    budget = AccuracyBudget.parse(request.accuracy_budget)
    calib = request.calibration
    report_path = next((p for p in artifact.files if p.name.endswith(".calib.json")), None)
    report = load_report(report_path) if report_path else None
    if report is None or report_path is None:
        named = option_name("build", "accuracy_budget", calib.from_config)
        raise InputError(f"{named} {budget} needs the calibration report beside the int8 model")
    source = (
        analysis_source(model, request, ui, "INT8 accuracy budget")
        if calib.data
        else analysis_source(model, request, QUIET, "INT8 accuracy budget")
    )

    def build_int8(out: Path, excluded: list[str]) -> PrecisionArtifact:
        return make_int8(
            model,
            out,
            target=request.target,
            source=source,
            algorithm=calib.algorithm,
            percentile=calib.percentile,
            # the report's labels are exact (a name, or OpType#index): never regexes
            exclude_nodes=[*calib.exclude_nodes, *(re.escape(label) for label in excluded)],
            exclude_ops=calib.exclude_ops,
            trt_version=calib.trt_version,
        )

    sidecar = _sidecar(dest, ".budget.json")
    key = sha256_json(
        {
            "version": BUDGET_RECORD_VERSION,
            "calibration": report.key,  # the model, the data, the algorithm and the tensors
            "quantized": report.quantized_nodes,
            "budget": str(budget),
            "target": request.target.name,
            "exclude_nodes": list(calib.exclude_nodes),
            "exclude_ops": list(calib.exclude_ops),
            "trt_version": calib.trt_version,
            "measured_on": source.identity(),  # the data, not how its path was written
            # a bare top1 beside named ones bounded every output before, the others only now: a
            # search recorded then is not this budget's (other budgets keep their keys)
            **({"bare_top1": "outputs not named"} if _bare_beside_named_top1(budget) else {}),
        }
    )

    def rewrite(kept: list[str]) -> tuple[PrecisionArtifact, list[str]]:
        """The int8 model with ``kept`` in float (a rewrite from the calibration), and the layers
        that count as quantized: ``kept`` itself when they leave nothing that can be quantized (an
        integer Add or pool of ONNX Runtime's placement needs a quantized layer beside it)."""
        try:
            return build_int8(dest, kept), report.quantized_nodes
        except NothingToQuantize:
            return artifact, kept

    quantized = report.quantized_nodes
    # --force (or a run's stage run again) searches again: a recorded search is reused no more than
    # the calibration is
    found, why = (None, None) if request.options.get("force") else _reusable_search(sidecar, key)
    if why:
        ui.info(f"accuracy budget {budget}: {why}: searching again")
    if found is not None:  # the same search on the same calibration: its outcome, not a new search
        kept = list(found["accuracy_budget"]["kept"])
        if found["accuracy_budget"]["met"] and kept and not set(kept) >= set(quantized):
            artifact, quantized = rewrite(kept)
        ui.info(f"accuracy budget {budget}: the search in {sidecar.name} is up to date (same calibration, "
                "budget, target and data): reused")  # fmt: skip
        return _budget_outcome(artifact, found, sidecar, quantized, ui)

    with scratch_beside(dest, "budget") as scratch:

        def make(excluded: Any) -> Path:
            if set(excluded) >= set(report.quantized_nodes):
                return model  # every layer left in fp32: the full-precision fallback
            # one variant on disk at a time: each is read by its measurement before the next is
            # made (PP-Layout's search writes 120 variants of 2-7 MB each: 887 MB kept all of them)
            for old in Path(scratch).iterdir():
                old.unlink()
            # the artifact's report beside the variant: same key, so its thresholds are reused
            # (only the Q/DQ graph is rewritten) instead of calibrating every variant again
            shutil.copyfile(report_path, Path(scratch) / "v.calib.json")
            rounding = report.outputs.get("rounding")  # auto's GPTQ-rounded weights: the rewrite reuses them
            if rounding and report_path.with_name(rounding).is_file():
                shutil.copyfile(report_path.with_name(rounding), Path(scratch) / "v.calib.rounding.npz")
            try:
                return build_int8(Path(scratch) / "v.int8.onnx", sorted(excluded)).path
            except NothingToQuantize:  # what is left in int8 cannot be quantized alone: the fp32 model
                return model

        with ui.progress(f"accuracy budget {budget}") as advance:
            result = int8_budget(
                model,
                make,
                report.quantized_nodes,
                budget,
                _feeds(source),
                progress=ui.info,
                emulate_integer=emulate_integer_for(request.target),
                said=option_name("build", "accuracy_budget", calib.from_config),
            )
            advance(1.0)
    everything = bool(result.kept) and set(result.kept) >= set(quantized)
    if result.met and result.kept and not everything:
        artifact, quantized = rewrite(list(result.kept))
    info = _budget_info(result, sidecar)
    atomic_write_json(sidecar, sealed({**to_jsonable(result), "key": key, "info": info}))
    return _budget_outcome(artifact, info, sidecar, quantized, ui)


def _bare_beside_named_top1(budget: AccuracyBudget) -> bool:
    top1 = [c.output for c in budget.criteria if c.metric == "top1"]
    return "" in top1 and any(top1)


BUDGET_RECORD_VERSION = 2  # the int8 budget search's record (<stem>.budget.json): its key's version (2: every
# kept layer tried for dropping; a search of 1 skipped some and may keep one it need not)


def _reusable_search(sidecar: Path, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The outcome (``_budget_info``) of the search recorded in ``sidecar`` when it was made under
    ``key`` and is as it was written (its content still its digest: a record edited since, say with
    fewer layers kept, reported figures its artifact did not reach), else None; and why a record
    made under ``key`` is not reused."""
    try:
        record = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(record, dict) or record.get("key") != key:
        return None, None
    if RECORD_DIGEST not in record:
        return None, f"the search in {sidecar.name} is not one this version wrote"
    if not intact_record(record):
        return None, f"the search in {sidecar.name} was edited since it was written"
    info = record.get("info")
    if isinstance(info, dict) and isinstance(info.get("accuracy_budget"), dict):
        return info, None
    return None, f"the search in {sidecar.name} is not one this version wrote"


def _budget_outcome(
    artifact: PrecisionArtifact, info: dict[str, Any], sidecar: Path, quantized: Sequence[str], ui: Ui
) -> PrecisionArtifact:
    """The artifact with the search's outcome recorded, said in one line; GateFailed when no int8
    model meets the budget."""
    b = info["accuracy_budget"]
    kept = list(b["kept"])
    if b["met"] and kept and set(kept) >= set(quantized):
        raise BudgetMissed(
            f"accuracy budget {b['budget']} is met only with every layer left in fp32, so no int8 model "
            f"meets it; build fp16 or fp32, or loosen the budget (steps in {sidecar})",
            sidecar,
        )
    if b["met"]:
        reached = ", ".join(f"{k} {measured_figure(v)}" for k, v in b["reached"].items() if v is not None)
        ui.info(
            f"accuracy budget {b['budget']} met with {len(kept)} of {len(quantized)} quantized layers "
            f"kept in higher precision: {reached} ({b['cost']['measurements']} measurements, "
            f"{b['cost']['seconds']} s)"
        )
    artifact.files.append(sidecar)
    artifact.info.update(info)
    _raise_unless_met(artifact.info, sidecar.parent)
    return artifact
