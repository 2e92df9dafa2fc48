"""``edgedeploy calibrate``: INT8 calibration from the command line.

Parses, calls :func:`edgedeploy.stages.precision.int8.make_int8` (or turns a TensorRT cache into a
Q/DQ model) and prints the report table on stdout, words on stderr; user errors are raised as
InputError (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from calibration.defaults import DEFAULT_PERCENTILE
from edgedeploy.cli.common import (
    InputShapes,
    OptionalDataSpec,
    Percentile,
    PreprocessFile,
    Seed,
    TargetName,
    check_seed,
    checked_percentile,
    err,
    load_preprocess,
    make_ui,
    out,
    typed,
    write_json,
)
from edgedeploy.errors import InputError, not_a_file
from edgedeploy.fileio import no_folder_at_outputs, not_an_output
from edgedeploy.interrupts import deferred

if TYPE_CHECKING:
    from edgedeploy.targets import Target


def calibrate_command(
    ctx: typer.Context,
    model: Annotated[Path, typer.Argument(help="FP32 ONNX model to quantize.")],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Directory for the Q/DQ model, cache, report.")
    ] = None,
    data: OptionalDataSpec = None,
    algorithm: Annotated[str, typer.Option(help="auto | entropy | max | percentile | mse")] = "auto",
    percentile: Percentile = DEFAULT_PERCENTILE,
    samples: Annotated[
        int | None,
        typer.Option(help="Number of calibration samples."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Samples read at a time; the model runs on 8 at most.")
    ] = 8,
    seed: Seed = 0,
    input: InputShapes = None,
    target: TargetName = "x86-64-cpu",
    exclude_nodes: Annotated[
        list[str] | None,
        typer.Option("--exclude-nodes", help="Node name or regex to keep in float (repeatable)."),
    ] = None,
    exclude_ops: Annotated[
        list[str] | None, typer.Option("--exclude-ops", help="Op type to keep in float (repeatable).")
    ] = None,
    trt_version: Annotated[
        str | None,
        typer.Option(
            "--trt-version",
            help="Write a TensorRT calibration cache for this version (default: the target's).",
        ),
    ] = None,
    preprocess: PreprocessFile = None,
    from_cache: Annotated[
        Path | None,
        typer.Option(
            "--from-cache", help="Build the Q/DQ model from a TensorRT calibration cache instead of data."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Recalibrate even when the key matches.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out-dir", hidden=True)] = None,  # the old name of -o
) -> None:
    """Calibrate an ONNX model for INT8 on the CPU: Q/DQ model, TensorRT cache and report.

    Example: edgedeploy calibrate model.onnx --data calib/ --target jetson-orin-nx -o int8/
    """
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.report import load_report, print_table
        from calibration.sources import parse_shapes, shapes_unused
        from edgedeploy.onnxio import check_model, load_onnx
        from edgedeploy.stages.build import output_names
        from edgedeploy.stages.precision.int8 import make_int8, open_calibration_data
        from edgedeploy.targets import load_target

    out_dir = output or out_dir
    if out_dir is None:
        raise InputError("missing option -o/--output: the folder for the Q/DQ model, cache and report")
    ui = make_ui()
    tgt = load_target(target)
    if not model.is_file():
        raise not_a_file("model file", model)
    load_onnx(model, load_external_data=False)  # a corrupt file is named as such, then the checker
    check_model(model)
    stem, parts = output_names(model, "int8")  # the names build --precision int8 gives its outputs
    not_an_output(json_path, out_dir, stem)
    no_folder_at_outputs(out_dir, stem, parts)
    if from_cache is not None:
        flags = {"data": "--data", "algorithm": "--algorithm", "percentile": "--percentile"}
        flags |= {"samples": "--samples", "batch_size": "--batch-size", "seed": "--seed", "input": "--input"}
        flags |= {"exclude_nodes": "--exclude-nodes", "exclude_ops": "--exclude-ops"}
        flags |= {"trt_version": "--trt-version", "preprocess": "--preprocess"}
        given = typed(ctx, *flags)
        unused = [flag for name, flag in flags.items() if name in given]
        if unused:
            raise InputError(
                f"--from-cache takes its thresholds from the cache: {', '.join(unused)} would not be used"
            )
        made = _from_cache(model, from_cache, out_dir / f"{stem}.int8.onnx", tgt)
        write_json(json_path, {"artifact": {**made, "target": tgt.name}})
        return
    if data is None:
        raise InputError("give --data SPEC (or --from-cache CACHE)")
    percentile = checked_percentile(ctx, "percentile", percentile, algorithm, ui)
    check_seed(ctx, data, seed, ui)
    shapes = parse_shapes(input)
    shapes_unused(data, shapes)
    source = open_calibration_data(
        model,
        data,
        samples=samples,
        batch_size=batch_size,
        seed=seed,
        preprocess=load_preprocess(preprocess),
        shapes=shapes or None,
        batch_from_shapes="batch_size" not in typed(ctx, "batch_size"),  # as profile's --batch-sizes
    )
    for note in source.notes(f"--preprocess {preprocess}" if preprocess else None):
        ui.warn(note)
    artifact = make_int8(
        model,
        out_dir / f"{stem}.int8.onnx",
        target=tgt,
        source=source,
        algorithm=algorithm,
        percentile=percentile,
        exclude_nodes=exclude_nodes or (),
        exclude_ops=exclude_ops or (),
        trt_version=trt_version,
        force=force,
    )
    ui.info(artifact.info["reason"])
    report = load_report(out_dir / artifact.info["report"])
    if report is not None:
        print_table(report, out, notes=err)
    for path in artifact.files:
        ui.info(f"wrote {path}" if not artifact.skipped else f"up to date: {path}")
    write_json(json_path, {"artifact": artifact, "report": report, "target": tgt.name})


def _from_cache(model: Path, cache: Path, dest: Path, target: Target) -> dict[str, object]:
    """The Q/DQ model of ``model`` with the scales of a TensorRT calibration ``cache``, at ``dest``;
    returns what was made (for ``--json``)."""
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.stages.precision.int8 import (
            placement_for,
            qdq_conversion_notice,
            qdq_from_cache,
            weight_bits_for,
        )

    uncovered, conversion = qdq_from_cache(model, cache, dest, target)
    if conversion is not None:
        err.print(qdq_conversion_notice(model, conversion), markup=False)
    if uncovered:
        err.print(
            f"{len(uncovered)} tensor(s) not in the cache were left in float: {', '.join(uncovered[:5])}",
            markup=False,
        )
    err.print(f"wrote {dest}", markup=False)
    _companions_of(dest, cache)
    return {
        "path": str(dest),
        "bytes": dest.stat().st_size,
        "from_cache": str(cache),
        "placement": placement_for(target),
        "weight_bits": weight_bits_for(target),
        "left_in_float": list(uncovered),
        **({"opset_conversion": conversion} if conversion is not None else {}),
    }


def _companions_of(dest: Path, cache: Path) -> None:
    """What lies beside the Q/DQ model ``dest`` under its stem describes it: its cache is the one it
    was made from (an earlier calibration's stayed, and build and bundle took it for this model's),
    and an earlier calibration's report and rounded weights go."""
    with deferred():  # heavy imports are not interrupt-safe
        import shutil

        from calibration.atomic import atomic_path

    stem = dest.name.removesuffix(".int8.onnx")
    beside = dest.with_name(f"{stem}.calib.cache")
    if not (beside.exists() and beside.resolve() == cache.resolve()):
        with atomic_path(beside) as tmp:
            shutil.copyfile(cache, tmp)
        err.print(f"wrote {beside} (the cache it was made from)", markup=False)
    for stale in (dest.with_name(f"{stem}.calib.json"), dest.with_name(f"{stem}.calib.rounding.npz")):
        if stale.is_file():
            stale.unlink()
            err.print(f"removed {stale}: it described an earlier calibration", markup=False)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_command)
