"""``edgedeploy profile``: latency distribution, throughput, memory and energy per batch size."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from edgedeploy.cli.common import (
    DataSpec,
    JsonOutput,
    PreprocessFile,
    Threads,
    fmt,
    ints,
    load_preprocess,
    make_ui,
    out,
    typed,
    write_json,
)
from edgedeploy.errors import InputError, SettingError
from edgedeploy.interrupts import deferred

if TYPE_CHECKING:
    from edgedeploy.stages.profile import ProfileResult


def profile_command(
    ctx: typer.Context,
    artifact: Annotated[Path, typer.Argument(help="An ONNX model or a TensorRT engine.")],
    warmup: Annotated[int | None, typer.Option(help="Warm-up iterations (instead of --warmup-ms).")] = None,
    warmup_ms: Annotated[float, typer.Option(help="Warm-up time in ms.")] = 200.0,
    iterations: Annotated[int | None, typer.Option(help="Timed iterations (instead of --duration).")] = None,
    duration: Annotated[float, typer.Option(help="Timed duration in seconds.")] = 3.0,
    batch_sizes: Annotated[
        str | None,
        typer.Option(help="Comma-separated batch sizes, e.g. 1,2,4,8 (default: dim 0 of --input, else 1)."),
    ] = None,
    threads: Threads = None,
    input: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            help="Input shape NAME:SHAPE, as trtexec's --shapes: its dim 0 is the batch size unless "
            "--batch-sizes is given, which then replaces it where the batch is dynamic.",
        ),
    ] = None,
    data: DataSpec = "random",
    preprocess: PreprocessFile = None,
    cuda_graph: Annotated[bool, typer.Option(help="Engines: launch through a captured CUDA graph.")] = False,
    no_data_transfers: Annotated[
        bool, typer.Option(help="Engines: time GPU compute only (no host-device copies).")
    ] = False,
    per_layer: Annotated[
        bool, typer.Option(help="Engines: per-layer times through TensorRT's IProfiler.")
    ] = False,
    json_path: JsonOutput = None,
) -> None:
    """Latency distribution, throughput and the model's peak memory per batch size (like trtexec's summary).

    Example: edgedeploy profile model.fp16.onnx --batch-sizes 1,8 --duration 5 --json lat.json

    With --data (as trtexec's --loadInputs) each batch size is timed on the data's first samples.
    """
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.sources import parse_shapes, shapes_unused
        from edgedeploy.onnxio import is_onnx_path
        from edgedeploy.options import setting_named
        from edgedeploy.stages.profile import ProfileOptions, profile

    ui = make_ui()
    if (warmup is not None and warmup < 0) or (iterations is not None and iterations < 1) or duration <= 0:
        raise InputError("--warmup must be >= 0, --iterations >= 1 and --duration > 0")
    given = typed(ctx, "duration", "warmup_ms")
    if iterations is not None and "duration" in given:
        ui.warn(f"--iterations {iterations} is used instead of --duration")
    if warmup is not None and "warmup_ms" in given:
        ui.warn(f"--warmup {warmup} is used instead of --warmup-ms")
    shapes = parse_shapes(input)
    if is_onnx_path(artifact):  # engines are timed on random inputs, of these shapes whatever the data
        shapes_unused(data, shapes)
    try:  # said as the flags: "--batch-sizes must be whole numbers >= 1"
        options = ProfileOptions(
            warmup_iterations=warmup,
            warmup_ms=warmup_ms,
            iterations=iterations,
            duration_s=duration,
            batch_sizes=tuple(ints(batch_sizes, "--batch-sizes")) if batch_sizes is not None else (1,),
            batch_from_shapes=batch_sizes is None,
            threads=threads,
            shapes=shapes,
            cuda_graph=cuda_graph,
            no_data_transfers=no_data_transfers,
            per_layer=per_layer,
            data=data,
            preprocess=load_preprocess(preprocess),
            preprocess_option=f"--preprocess {preprocess}" if preprocess else None,
        )
    except SettingError as exc:
        raise setting_named(exc, from_config=False) from None
    with ui.progress(f"profile {artifact.name}") as advance:
        result = profile(artifact, options, progress=lambda _b, f: advance(f))
    print_profile(result)
    for warning in result.warnings:
        ui.warn(warning)
    write_json(json_path, result)


def print_profile(result: ProfileResult) -> None:
    """trtexec-like summary: settings, then per batch size and section the latency distribution."""
    out.print(f"=== Performance summary: {result.artifact} ({result.backend}) ===")
    for key, value in result.settings.items():
        out.print(f"  {key}: {value}")
    table = Table()
    columns = (
        "batch",
        "section",
        "min",
        "mean",
        "median",
        "p90",
        "p95",
        "p99",
        "max",
        "std",
        "CV %",
        "inf/s",
        "model MB",
        "energy mJ/inf",
    )
    for col in columns:
        table.add_column(col, justify="left" if col == "section" else "right")
    for b in result.batches:
        energy = (
            (b.energy or {}).get("energy_per_inference_mj") if (b.energy or {}).get("measurable") else None
        )
        sections = b.sections or {"latency": b.latency}
        for index, (name, s) in enumerate(sections.items()):
            first = index == 0
            table.add_row(
                str(b.batch_size) if first else "",
                name,
                f"{s.min_ms:.3f}",
                f"{s.mean_ms:.3f}",
                f"{s.median_ms:.3f}",
                f"{s.p90_ms:.3f}",
                f"{s.p95_ms:.3f}",
                f"{s.p99_ms:.3f}",
                f"{s.max_ms:.3f}",
                f"{s.std_ms:.3f}",
                f"{s.cv_percent:.1f}",
                f"{b.throughput_ips:.1f}" if first else "",
                fmt(b.model_peak_rss_mb, ".1f") if first else "",
                (fmt(energy, ".3f") if energy is not None else "n/a") if first else "",
            )
    out.print(table)
    out.print("  times in ms; inf/s = inferences (samples) per second")
    if any(b.model_peak_rss_mb is not None for b in result.batches):
        out.print("  model MB = peak memory the model's session added to the process (model_peak_rss_mb)")
    reasons = {
        (b.energy or {}).get("reason") for b in result.batches if not (b.energy or {}).get("measurable")
    }
    for reason in sorted(r for r in reasons if r):
        out.print(f"  energy: {reason}")
    for b in result.batches:
        for layer in (b.per_layer or [])[:15]:
            out.print(
                f"  batch {b.batch_size} layer {layer.name}: {layer.mean_ms:.4f} ms ({layer.percent:.1f}%)"
            )


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)
