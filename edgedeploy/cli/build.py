"""``edgedeploy build``: the precision artifact for a target, compiled by a backend.

The TensorRT parameters are named as in ``[build]`` of ``edgedeploy.toml``;
:func:`edgedeploy.options.backend_options` turns them into the backend's build options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from calibration.defaults import DEFAULT_PERCENTILE
from edgedeploy.cli.common import (
    DATA_SPEC_HELP,
    PREPROCESS_HELP,
    BackendName,
    InputShapes,
    JsonOutput,
    Percentile,
    TargetName,
    checked_percentile,
    csv,
    data_spec,
    load_preprocess,
    make_ui,
    out,
    typed,
    write_json,
)
from edgedeploy.errors import BudgetMissed, InputError
from edgedeploy.fileio import no_folder_at_outputs, not_an_output
from edgedeploy.interrupts import deferred
from edgedeploy.ui import human_size

FP16 = "FP16"
INT8 = "INT8 calibration"
TENSORRT = "TensorRT"


def build_command(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="The fp32 ONNX model.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8.")] = "fp16",
    target: TargetName = "x86-64-cpu",
    backend: BackendName = "auto",
    keep_io_types: Annotated[
        bool,
        typer.Option(
            "--keep-io-types/--no-keep-io-types",
            help="fp16: keep graph inputs/outputs float32.",
            rich_help_panel=FP16,
        ),
    ] = True,
    fp32_ops: Annotated[
        list[str] | None,
        typer.Option(
            help="fp16: op types kept in fp32, e.g. Softmax,LayerNormalization (repeatable).",
            rich_help_panel=FP16,
        ),
    ] = None,
    fp32_nodes: Annotated[
        list[str] | None,
        typer.Option(
            help="fp16: node names kept in fp32, comma-separated (repeatable); a name the model gives "
            "several nodes keeps them all.",
            rich_help_panel=FP16,
        ),
    ] = None,
    calib_data: Annotated[
        str | None,
        typer.Option(
            help=f"int8 calibration and fp16 range analysis data: {DATA_SPEC_HELP}.",
            rich_help_panel=INT8,
            callback=data_spec,
        ),
    ] = None,
    calib_preprocess: Annotated[
        Path | None,
        typer.Option(help=f"int8/fp16 analysis: {PREPROCESS_HELP}", rich_help_panel=INT8),
    ] = None,
    calib_algorithm: Annotated[
        str,
        typer.Option(
            help="int8: auto (measured per tensor), entropy, max, percentile or mse.", rich_help_panel=INT8
        ),
    ] = "auto",
    calib_percentile: Percentile = DEFAULT_PERCENTILE,
    calib_samples: Annotated[
        int,
        typer.Option(
            help="int8 calibration and fp16 range analysis: samples read at most (a fixed batch "
            "larger than that is read whole).",
            rich_help_panel=INT8,
        ),
    ] = 512,
    calib_batch_size: Annotated[
        int,
        typer.Option(
            help="int8 calibration and fp16 range analysis: samples read from the data at a time (a "
            "model with a fixed batch takes its own).",
            rich_help_panel=INT8,
        ),
    ] = 8,
    input: InputShapes = None,
    workspace_mb: Annotated[
        int | None,
        typer.Option(help="TensorRT workspace limit (MiB); default per target.", rich_help_panel=TENSORRT),
    ] = None,
    memory_pools_mb: Annotated[
        list[str] | None,
        typer.Option(
            "--memory-pool",
            help="TensorRT memory pool limit NAME=MiB, repeatable (workspace, tactic_shared_memory, "
            "dla_managed_sram, dla_local_dram, dla_global_dram, tactic_dram).",
            rich_help_panel=TENSORRT,
        ),
    ] = None,
    opt_level: Annotated[
        int | None,
        typer.Option(help="TensorRT builder optimization level 0-5.", rich_help_panel=TENSORRT),
    ] = None,
    timing_cache: Annotated[
        Path | None, typer.Option(help="TensorRT timing cache to load and save.", rich_help_panel=TENSORRT)
    ] = None,
    dla_core: Annotated[
        int | None, typer.Option(help="TensorRT: DLA core, with GPU fallback.", rich_help_panel=TENSORRT)
    ] = None,
    profiles: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            help="TensorRT profile NAME:MIN,OPT,MAX (repeat per input; an input named again starts "
            "the next profile).",
            rich_help_panel=TENSORRT,
        ),
    ] = None,
    hardware_compat: Annotated[
        str | None,
        typer.Option(
            help="TensorRT: none, ampere_plus or same_compute_capability.", rich_help_panel=TENSORRT
        ),
    ] = None,
    version_compatible: Annotated[
        bool, typer.Option(help="TensorRT: version-compatible engine.", rich_help_panel=TENSORRT)
    ] = False,
    profiling_verbosity: Annotated[
        str | None,
        typer.Option(help="TensorRT: layer_names_only, detailed or none.", rich_help_panel=TENSORRT),
    ] = None,
    tf32: Annotated[
        bool,
        typer.Option(
            "--tf32/--no-tf32",
            help="TensorRT: TF32 kernels (on by default, as in TensorRT).",
            rich_help_panel=TENSORRT,
        ),
    ] = True,
    force: Annotated[
        bool,
        typer.Option(
            help="Rebuild even when an up-to-date output exists (int8: recalibrate, budget searched again)."
        ),
    ] = False,
    accuracy_budget: Annotated[
        str | None,
        typer.Option(
            help="fp16/int8: keep the most sensitive layers in higher precision until met, e.g. "
            "'cosine>=0.999,top1>=0.99' (also max_abs<=X, snr>=DB); exit 1 if the fp32 fallback misses it. "
            "Measured on --calib-data (else random data): refused if the model does not run on it. "
            "A cosine bound holds scale too, as compare's gate: |norm ratio - 1| <= sqrt(1 - bound**2)."
        ),
    ] = None,
    fp16_analysis: Annotated[
        bool,
        typer.Option(
            "--fp16-analysis/--no-fp16-analysis",
            help="fp16: keep overflowing layers in fp32 automatically (range analysis on --calib-data).",
            rich_help_panel=FP16,
        ),
    ] = True,
    json_path: JsonOutput = None,
) -> None:
    """Make the precision artifact and build it for a target with a backend.

    Example: edgedeploy build model.onnx --precision fp16 --target jetson-orin-nano -o out/
    """
    user_options: dict[str, Any] = dict(locals())  # the parameters, named as in [build]
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.algorithms import ALGORITHMS
        from calibration.sources import parse_shapes, shapes_unused
        from edgedeploy.onnxio import check_model, load_onnx
        from edgedeploy.options import BuildRequest, CalibrationRequest, Fp16Options, backend_options
        from edgedeploy.stages.build import build, output_names
        from edgedeploy.stages.precision.budget import AccuracyBudget, refuse_top1_without_scores
        from edgedeploy.targets import load_target

    ui = make_ui()
    tgt = load_target(target)
    tgt.check_precision(precision)
    given = typed(ctx, "calib_samples", "calib_batch_size", "calib_algorithm", "calib_percentile")
    fp16_given = [
        ("--fp32-ops", bool(fp32_ops)),
        ("--fp32-nodes", bool(fp32_nodes)),
        ("--no-keep-io-types", not keep_io_types),
        ("--no-fp16-analysis", not fp16_analysis),
    ]
    data_given = [
        ("--calib-data", bool(calib_data)),
        ("--calib-preprocess", calib_preprocess is not None),
        ("--calib-samples", "calib_samples" in given),
        ("--calib-batch-size", "calib_batch_size" in given),
        ("--accuracy-budget", bool(accuracy_budget)),
    ]  # not --input: every build runs its artifact once, on random inputs of those shapes without data
    int8_given = [(f"--calib-{n}", f"calib_{n}" in given) for n in ("algorithm", "percentile")]
    no_data = ("--calib-preprocess without --calib-data", calib_preprocess is not None and not calib_data)
    moot = {
        "fp32": [*fp16_given, *data_given, *int8_given],
        "fp16": [
            *int8_given,
            ("--calib-samples without --calib-data", "calib_samples" in given and not calib_data),
            no_data,
        ],
        "int8": [*fp16_given, no_data],
    }.get(precision, [])
    if unused := [flag for flag, given in moot if given]:
        hint = " (int8: calibrate --exclude-ops/--exclude-nodes keep layers in float)"
        hint = hint if precision == "int8" and set(unused) & {flag for flag, _ in fp16_given} else ""
        raise InputError(f"{', '.join(unused)}: not used by an {precision} build{hint}")
    if calib_data:  # files, images or a loader script: fed in their own shapes, never --input's
        shapes_unused(calib_data, parse_shapes(input), ("--calib-data", "--input"))
    # refused here, before any work: calibration refused them only after the warning of random data
    for flag, value in (("--calib-samples", calib_samples), ("--calib-batch-size", calib_batch_size)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if calib_algorithm not in ALGORITHMS:
        raise InputError(
            f"--calib-algorithm '{calib_algorithm}' is unknown; choose one of {', '.join(ALGORITHMS)}"
        )
    # typed for an fp32 or fp16 build, refused above
    calib_percentile = checked_percentile(
        ctx, "calib_percentile", calib_percentile, calib_algorithm, ui, prefix="calib-"
    )
    stem, parts = output_names(model, precision)
    not_an_output(json_path, output, stem)
    not_an_output(timing_cache, output, stem, option="--timing-cache")
    no_folder_at_outputs(output, stem, parts)
    load_onnx(model, load_external_data=False)
    check_model(model)  # what fails the checker here would fail it in every artifact made of it (run and
    # matrix check their model at export)
    request = BuildRequest(
        precision=precision,
        target=tgt,
        backend=backend,
        fp16=Fp16Options(
            keep_io_types=keep_io_types,
            fp32_ops=csv(",".join(fp32_ops or [])),
            fp32_nodes=csv(",".join(fp32_nodes or [])),
        ),
        calibration=CalibrationRequest(
            data=calib_data or "",
            algorithm=calib_algorithm,
            percentile=calib_percentile,
            samples=calib_samples,
            batch_size=calib_batch_size,
            shapes=parse_shapes(input),
            preprocess=load_preprocess(calib_preprocess) or {},
        ),
        options={"force": force, **backend_options(user_options)},
        fp16_analysis=fp16_analysis,
        accuracy_budget=accuracy_budget,
    )
    if accuracy_budget:  # a bad budget, or a top1 bound on a model without class scores: before any work
        refuse_top1_without_scores(AccuracyBudget.parse(accuracy_budget), model)
    try:
        result = build(model, request, output, ui)
    except BudgetMissed as exc:  # exit 1 as a failed gate, with its figures in the JSON as compare's
        if json_path is not None:
            write_json(json_path, _missed_budget_record(model, precision, exc))
        raise
    checked = str(result.build.info.get("checked", ""))
    state = _built_state(result.build.skipped, checked, bool(input), takes_data=precision != "fp32")
    out.print(
        f"{precision} artifact: {result.precision.path} ({human_size(result.precision.path.stat().st_size)})"
    )
    out.print(f"{result.build.backend} output: {result.build.artifact} ({state})")
    if json_path is not None:
        with deferred():  # heavy imports are not interrupt-safe
            from edgedeploy.results import to_jsonable

        record = to_jsonable(result)  # with the sizes the lines above print
        record["precision"]["bytes"] = result.precision.path.stat().st_size
        built = Path(result.build.artifact)
        record["build"]["bytes"] = built.stat().st_size if built.is_file() else None
        write_json(json_path, record)


def _built_state(skipped: bool, checked: str, shapes_given: bool, takes_data: bool) -> str:
    """What the output line says of the backend's artifact: "built" once it ran (every artifact is
    run once before it is called built); one only loaded says that instead, with what failed it and,
    where random inputs did, where better ones come from (its shapes only when none were given; real
    inputs only where the build ``takes_data``: fp32 reads no --calib-data, and refuses it).
    The exit stays 0: the artifact was made and loads; the data is at fault. A TensorRT engine no
    GPU runtime here could run ("built, not run", edgedeploy/backends/trt_check.py's NOT_RUN) says
    so too: it was never run."""
    if not checked.startswith(("loaded, not run", "built, not run")):
        return "up to date, skipped" if skipped else "built"
    state = f"up to date, skipped; {checked}" if skipped else checked
    if "random inputs fail" not in checked:
        return state
    if shapes_given:
        return f"{state}; give real inputs with --calib-data" if takes_data else state
    shapes = "give its input shapes with --input NAME:SHAPE"
    return f"{state}; {shapes}, or real inputs with --calib-data" if takes_data else f"{state}; {shapes}"


def _missed_budget_record(model: Path, precision: str, exc: BudgetMissed) -> dict[str, Any]:
    """What ``--json`` holds for a build whose accuracy budget no model met: the error and the
    search's steps (its sidecar file, which the error names)."""
    import json

    try:
        steps = json.loads(exc.steps.read_text())
    except (OSError, ValueError):
        steps = None
    return {"model": str(model), "precision": precision, "passed": False, "error": str(exc),
            "steps_file": str(exc.steps), "accuracy_budget": steps}  # fmt: skip


def register(app: typer.Typer) -> None:
    app.command("build")(build_command)
