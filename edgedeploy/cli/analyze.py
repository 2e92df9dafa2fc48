"""``edgedeploy analyze``: FP16 range analysis of an ONNX model on data, worst risks first, as tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, cast

import typer
from rich.table import Table

from edgedeploy.cli.common import (
    BatchSize,
    DataSpec,
    InputShapes,
    JsonOutput,
    PreprocessFile,
    Seed,
    TargetName,
    check_seed,
    err,
    load_preprocess,
    make_ui,
    out,
    typed,
    write_json,
)
from edgedeploy.errors import InputError, naming_guessed_dims
from edgedeploy.interrupts import deferred

# taken as build takes it, so build's command line analyzes as it is; it no longer changes the count
# (b24050c: a GPU target's artifact is TensorRT's on any backend, stages/precision/fp16.runtime_for)
AnalyzeBackend = Annotated[
    str,
    typer.Option(
        "--backend",
        help="auto, onnxruntime or tensorrt, as build takes it; changes nothing: the nodes kept in fp32 "
        "follow --target (a GPU target's are TensorRT's on any backend).",
    ),
]


def analyze_command(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="The fp32 ONNX model.")],
    data: DataSpec,
    preprocess: PreprocessFile = None,
    samples: Annotated[
        int | None, typer.Option(help="Samples to run (default: all; random data: 32).")
    ] = None,
    batch_size: BatchSize = 8,
    seed: Seed = 0,
    input: InputShapes = None,
    top: Annotated[int, typer.Option(help="How many tensors and weights at risk to list.", min=1)] = 20,
    target: TargetName = "x86-64-cpu",
    backend: AnalyzeBackend = "auto",
    json_path: JsonOutput = None,
) -> None:
    """Find what overflows or underflows in FP16 (weights, activations) and what fp16 build keeps in fp32.

    The nodes kept in fp32 are counted for build --precision fp16 with the same --target: the ops
    a runtime cannot run in fp16 differ between ONNX Runtime (a CPU target) and TensorRT (a GPU one).

    Example: edgedeploy analyze model.onnx --data val.npz --target jetson-orin-nano --json ranges.json
    """
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.errors import CalibrationError
        from calibration.graphs import infer_shapes_light
        from calibration.modelinfo import model_io
        from calibration.sources import open_source, parse_shapes, shapes_unused
        from edgedeploy.backends import BACKEND_NAMES
        from edgedeploy.options import Fp16Options
        from edgedeploy.stages.build import MIXED, MIXED_WORDS, precision_of_model, refused_other_precision
        from edgedeploy.stages.precision.analysis import analyze as run_analysis
        from edgedeploy.stages.precision.analysis import report_json
        from edgedeploy.stages.precision.fp16 import mark_not_float32, plan_fp32_nodes, runtime_for
        from edgedeploy.stages.precision.islands import choose_fp32_nodes, hard_fp32_nodes
        from edgedeploy.stages.precision.mixed import fp16_analysis_model
        from edgedeploy.targets import load_target

    ui = make_ui()
    tgt = load_target(target)
    tgt.check_precision("fp16")  # as the build refuses it, before any work
    if backend not in BACKEND_NAMES:  # checked as build checks it, though it changes nothing here
        raise InputError(f"unknown backend '{backend}'; choose one of {', '.join(BACKEND_NAMES)}")
    runtime = runtime_for(tgt)  # whose ops of the converter's block list stay fp32
    shapes = parse_shapes(input)
    shapes_unused(data, shapes)
    loaded = fp16_analysis_model(model, ui)  # converted where the fp16 build converts it
    try:
        check_seed(ctx, data, seed, ui)
        inputs, _ = model_io(model)
        source = open_source(
            data,
            inputs,
            # 0 is refused there, as calibrate's and compare's are (not taken for "all")
            samples=samples if samples is not None else (32 if data.startswith("random") else None),
            batch_size=batch_size,
            seed=seed,
            shapes=shapes or None,
            image_options=load_preprocess(preprocess),
            batch_from_shapes="batch_size" not in typed(ctx, "batch_size"),  # as profile's --batch-sizes
        )
    except CalibrationError as exc:
        raise InputError(str(exc)) from None
    with ui.progress(f"range analysis of {model.name}") as advance, naming_guessed_dims(source.fed_as_one):
        report = run_analysis(loaded, source, data_description=source.describe(), name=model.name)
        advance(1.0)
    report.model = str(model)
    islands = choose_fp32_nodes(loaded, report)

    every_weight = report.weights_at_risk()
    weights = every_weight[:top]
    if weights:
        table = Table(title="weights at risk in fp16")
        for col in ("weight", "where", "max |w|", "> 65504", "subnormal", "flushed", "risk"):
            table.add_column(
                col, justify="right" if col in ("max |w|", "> 65504", "subnormal", "flushed") else "left"
            )
        for w in weights:
            s = w.stats
            table.add_row(
                w.name,
                w.where,
                f"{s.absmax:.4g}",
                str(s.overflow),
                f"{s.subnormal_share:.1%}",
                f"{s.flushed_share:.1%}",
                "; ".join(w.risks),
            )
        out.print(table)
        _more(len(every_weight) - top, "weights", json_path)
    every_tensor = report.tensors_at_risk()
    tensors = every_tensor[:top]
    title = f"tensors at risk in fp16, worst first ({report.samples} samples, data: {data})"
    if tensors:
        table = Table(title=title)
        for col in (
            "tensor",
            "op (producer)",
            "max |x|",
            "> 65504",
            "subnormal",
            "flushed",
            "NaN/Inf",
            "risk",
        ):
            table.add_column(col, justify="left" if col in ("tensor", "op (producer)", "risk") else "right")
        for t in tensors:
            s = t.stats
            table.add_row(
                t.name,
                f"{t.op} ({t.producer})" if t.producer else t.op,
                f"{s.absmax:.4g}",
                f"{s.overflow_share:.2%}",
                f"{s.subnormal_share:.1%}",
                f"{s.flushed_share:.1%}",
                str(s.nonfinite),
                "; ".join(t.risks),
            )
        out.print(table)
        _more(len(every_tensor) - top, "tensors", json_path)
    else:
        out.print(f"no tensor at risk in fp16 ({len(report.tensors)} tensors, {report.samples} samples)")
    for note in report.notes:
        ui.warn(note)
    if source.synthetic:
        ui.warn("analysed on synthetic random data: real inputs may reach other ranges; pass --data")
    for note in source.notes(f"--preprocess {preprocess}" if preprocess else None):
        ui.warn(note)
    existing = precision_of_model(model)  # read once: the words below are taken from it too
    where = {"target": tgt.name, "runtime": runtime}  # whose build every branch's JSON speaks of
    if existing == "int8":  # nothing kept by rule: the fp16 build refuses it
        refused = refused_other_precision(model, "int8")
        out.print(f"build --precision fp16 refuses it: {refused}", markup=False, highlight=False)
        json_data = {**report_json(report), "fp32_islands": islands, "fp32_by_rule": [], **where}
        write_json(json_path, {**json_data, "fp16_build_refused": refused})
        return
    if existing in ("fp16", MIXED):  # nothing converted: the fp16 build takes it as it is
        refused = refused_other_precision(model, existing)
        out.print(
            f"build --precision fp16 takes it as it is ({model.name} is already "
            f"{MIXED_WORDS if existing == MIXED else 'an fp16 model'}: nothing is converted or kept in "
            "fp32); "
            f"build --precision int8 refuses it: {refused}",
            markup=False,
            highlight=False,
            soft_wrap=True,  # one line, however wide
        )
        json_data = {**report_json(report), "fp32_islands": islands, "fp32_by_rule": [], **where}
        write_json(json_path, {**json_data, "fp16_build_as_is": True, "int8_build_refused": refused})
        return
    # build keeps the rule's islands outright, and the flagged rest only where emulated fp16
    # measurably changes the outputs (which analyze does not measure); counted by the build's own
    # plan, which adds what it keeps besides them (the nodes inside an fp32 If/Loop, ops fp16 lacks)
    hard = hard_fp32_nodes(loaded, islands, report)
    kept_by_analysis = {n: islands[n] for n in hard}
    _, _, plan, _ = plan_fp32_nodes(loaded, Fp16Options(auto_fp32_nodes=kept_by_analysis, runtime=runtime))
    try:  # integer-only nodes are no fp32 node of the build's plan, blocked op or not
        mark_not_float32(plan, infer_shapes_light(loaded))
    except Exception:  # a model shape inference cannot type: make_fp16 marks what the file declares
        mark_not_float32(plan, loaded)
    entries = cast(list[dict[str, Any]], plan["nodes"])
    kept = [str(e["node"]) for e in entries if e["precision"] == "fp32"]
    flagged = [n for n in islands if n not in hard]
    out.print(
        f"build --precision fp16 keeps {len(kept)} of {plan['nodes_total']} nodes in fp32 by rule"
        + (": " + ", ".join(kept[:8]) + (" ..." if len(kept) > 8 else "") if kept else "")
        + (
            f"; {len(flagged)} more are flagged, each kept only where its fp16 measurably changes the "
            "outputs (build measures it)"
            if flagged
            else ""
        )
    )
    json_data = {**report_json(report), "fp32_islands": islands, "fp32_by_rule": kept}
    write_json(json_path, {**json_data, **where})


def _more(count: int, what: str, json_path: Path | None) -> None:
    """The line under a table cut at --top, as calibrate prints under its table: the JSON lists all."""
    if count > 0:
        where = str(json_path) if json_path is not None else "--json FILE"
        err.print(f"... {count} more {what} at risk in the JSON ({where})", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
