"""``edgedeploy export``: a PyTorch model (or an ONNX file) to a clean, checked fp32 ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgedeploy.cli.common import JsonOutput, csv, make_ui, out, typed, write_json
from edgedeploy.interrupts import deferred


def export_command(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Argument(help="module:callable, path/file.py:callable[:inputs_callable], or model.onnx")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the fp32 ONNX.")],
    opset: Annotated[int, typer.Option(help="ONNX opset: 13 to the newest the installed onnx knows.")] = 18,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch/--static", help="Make dim 0 dynamic.")
    ] = True,
    dynamic: Annotated[
        list[str] | None,
        typer.Option(
            "--dynamic",
            help="Another axis of an input to leave dynamic, besides the batch: INPUT:AXIS=NAME, repeatable "
            "(x:1=seq; x:2=height --dynamic x:3=width). Axes given one name are one size. The export is "
            "checked at the example's sizes and at other ones (twice them, or half, or one more).",
        ),
    ] = None,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxslim.")] = True,
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="Example input NAME:SHAPE[:DTYPE], repeatable; for an ONNX file, the shape its check runs "
            "it on (dynamic dims; the file's dtype stands).",
        ),
    ] = None,
    input_names: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated graph input names: one per graph input, or one per argument of forward "
            "(a nested one's tensors are then NAME_0, NAME_1, ...)."
        ),
    ] = None,
    output_names: Annotated[str | None, typer.Option(help="Comma-separated graph output names.")] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Compare the exported model's outputs with the module's (ONNX Runtime, CPU) on the example "
            "inputs and two sets of other values of their shapes; refuse one that differs beyond float32 "
            "rounding (exit 2). --no-verify keeps it, with a warning.",
        ),
    ] = True,
    json_path: JsonOutput = None,
) -> None:
    """Export a PyTorch model (or check and simplify an ONNX file) to a clean fp32 ONNX.

    Example: edgedeploy export models.py:resnet --input images:1x3x224x224 -o resnet.onnx
    """
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.stages.export import (
            ONNX_KEEPS,
            DynamicAxis,
            ExportOptions,
            InputShape,
            export,
            is_onnx_path,
            pytorch_only,
        )

    ui = make_ui()
    options = ExportOptions(
        opset=opset,
        dynamic_batch=dynamic_batch,
        dynamic_axes=[DynamicAxis.parse(item) for item in dynamic or []],
        simplify=simplify,
        inputs=[InputShape.parse(i) for i in input or []],
        input_names=csv(input_names) or None,
        output_names=csv(output_names) or None,
        verify=verify,
    )
    ignored = pytorch_only(options) if is_onnx_path(model) else []  # an ONNX file is checked as it is
    if is_onnx_path(model) and dynamic_batch and typed(ctx, "dynamic_batch"):  # the default, typed: a
        ignored.insert(0, "dynamic_batch")  # fixed batch in the file stays fixed, unsaid before
    if ignored:
        flags = {"dynamic_batch": "--dynamic-batch" if dynamic_batch else "--static"}
        flags |= {"dynamic_axes": "--dynamic", "input_names": "--input-names"}
        flags |= {"output_names": "--output-names", "opset": "--opset", "verify": "--no-verify"}
        ui.warn(f"{', '.join(flags[name] for name in ignored)}: {ONNX_KEEPS}")
    with ui.progress("export") as advance:
        result = export(model, output, options, notify=ui.info)
        advance(1.0)
    out.print(
        f"exported {result.source} -> {result.path} ({result.exporter}, opset {result.opset}, "
        f"{result.nodes_before} -> {result.nodes_after} nodes)"
    )
    for spec in result.inputs:
        out.print(f"  input  {spec.describe()}")
    for spec in result.outputs:
        out.print(f"  output {spec.describe()}")
    for warning in result.warnings:
        ui.warn(warning)
    write_json(json_path, result)


def register(app: typer.Typer) -> None:
    app.command("export")(export_command)
