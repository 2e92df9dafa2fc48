"""The ``edgedeploy`` command line: parse, call one stage function, print. Nothing else lives here.

Errors the user can cause print one line and exit 2; failed gates exit 1. Words go to stderr,
tables and JSON to stdout.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from edgedeploy import __version__
from edgedeploy.errors import EdgeDeployError, GateFailed, InputError
from edgedeploy.ui import Ui

# Wide tables when piped (CI logs), the terminal's width otherwise; error lines never wrap.
out = Console(highlight=False, markup=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class _DefaultCreateGroup(TyperGroup):
    """``edgedeploy bundle MODEL ... -o DIR`` means ``bundle create``; verify and inspect stay subcommands."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args.insert(0, "create")
        return super().resolve_command(ctx, args)


app = typer.Typer(
    name="edgedeploy",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    help="Take a trained network to a verified, measured deployment on Jetson boards and GPUs.\n\n"
    "Example: [bold]edgedeploy demo[/bold]",
)
targets_app = typer.Typer(
    help="List the boards and GPUs edgedeploy knows, or show one.",
    no_args_is_help=False,
    invoke_without_command=True,
)
bundle_app = typer.Typer(
    cls=_DefaultCreateGroup,
    no_args_is_help=True,
    help="Pack artifacts into a deployment bundle, or verify / inspect one.\n\n"
    "Example: edgedeploy bundle m.fp32.onnx m.fp16.onnx -o bundle",
)
app.add_typer(targets_app, name="targets")
app.add_typer(bundle_app, name="bundle")


def _ui(json_to_stdout: bool = False) -> Ui:
    return Ui(err)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _ints(value: str | None, what: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise InputError(f"{what} must be comma-separated integers, got '{value}'") from None


def _memory_pools(items: list[str]) -> dict[str, int]:
    pools: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise InputError(f"bad --memory-pool '{item}': expected NAME=MiB, e.g. tactic_shared_memory=48")
        pools[name.strip().lower()] = int(value)
    return pools


def _write_json(path: Path | None, obj: Any) -> None:
    if path is not None:
        from edgedeploy.results import write_json

        write_json(path, obj)
        err.print(f"wrote {path}")


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


# ---------------------------------------------------------------- export
@app.command()
def export(
    model: Annotated[
        str, typer.Argument(help="module:callable, path/file.py:callable[:inputs_callable], or model.onnx")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the fp32 ONNX.")],
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 13).")] = 18,
    dynamic_batch: Annotated[
        bool, typer.Option("--dynamic-batch/--static", help="Make dim 0 dynamic.")
    ] = True,
    simplify: Annotated[bool, typer.Option("--simplify/--no-simplify", help="Run onnxslim.")] = True,
    input: Annotated[
        list[str] | None, typer.Option("--input", help="Example input NAME:SHAPE[:DTYPE], repeatable.")
    ] = None,
    input_names: Annotated[str | None, typer.Option(help="Comma-separated graph input names.")] = None,
    output_names: Annotated[str | None, typer.Option(help="Comma-separated graph output names.")] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Export a PyTorch model (or check and simplify an ONNX file) to a clean fp32 ONNX.

    Example: edgedeploy export models.py:resnet --input images:1x3x224x224 -o resnet.onnx
    """
    from edgedeploy.export import ExportOptions, InputShape
    from edgedeploy.export import export as run_export

    ui = _ui()
    options = ExportOptions(
        opset=opset,
        dynamic_batch=dynamic_batch,
        simplify=simplify,
        inputs=[InputShape.parse(i) for i in input or []],
        input_names=_csv(input_names) or None,
        output_names=_csv(output_names) or None,
    )
    with ui.progress("export") as advance:
        result = run_export(model, output, options, notify=ui.info)
        advance(1.0)
    out.print(
        f"exported {result.source} -> {result.path} ({result.exporter}, opset {result.opset}, "
        f"{result.nodes_before} -> {result.nodes_after} nodes)"
    )
    for spec in result.inputs:
        out.print(f"  input  {spec.describe()}")
    for spec in result.outputs:
        out.print(f"  output {spec.describe()}")
    _write_json(json_path, result)


# ---------------------------------------------------------------- build
@app.command()
def build(
    model: Annotated[Path, typer.Argument(help="The fp32 ONNX model.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8.")] = "fp16",
    target: Annotated[
        str,
        typer.Option(
            help="Target name (see 'edgedeploy targets'); host = this CPU (x86-64-vnni or x86-64-cpu)."
        ),
    ] = "x86-64-cpu",
    backend: Annotated[str, typer.Option(help="auto, onnxruntime or tensorrt.")] = "auto",
    keep_io_types: Annotated[
        bool,
        typer.Option("--keep-io-types/--no-keep-io-types", help="fp16: keep graph inputs/outputs float32."),
    ] = True,
    fp32_ops: Annotated[
        str | None, typer.Option(help="fp16: op types kept in fp32, e.g. Softmax,LayerNormalization")
    ] = None,
    fp32_nodes: Annotated[str | None, typer.Option(help="fp16: node names kept in fp32.")] = None,
    calib_data: Annotated[
        str | None, typer.Option(help="int8: calibration data (folder, .npz, loader .py, random).")
    ] = None,
    calib_algorithm: Annotated[
        str, typer.Option(help="int8: auto (measured per tensor), entropy, max, percentile or mse.")
    ] = "auto",
    calib_samples: Annotated[int, typer.Option(help="int8: number of calibration samples.")] = 512,
    calib_batch_size: Annotated[int, typer.Option(help="int8: calibration batch size.")] = 8,
    input: Annotated[
        list[str] | None, typer.Option("--input", help="Shape for dynamic inputs NAME:SHAPE.")
    ] = None,
    workspace_mb: Annotated[
        int | None, typer.Option(help="TensorRT workspace limit (MiB); default per target.")
    ] = None,
    memory_pool: Annotated[
        list[str] | None,
        typer.Option(
            "--memory-pool",
            help="TensorRT memory pool limit NAME=MiB, repeatable (workspace, tactic_shared_memory, "
            "dla_managed_sram, dla_local_dram, dla_global_dram, tactic_dram).",
        ),
    ] = None,
    opt_level: Annotated[int | None, typer.Option(help="TensorRT builder optimization level 0-5.")] = None,
    timing_cache: Annotated[Path | None, typer.Option(help="TensorRT timing cache to load and save.")] = None,
    dla_core: Annotated[int | None, typer.Option(help="TensorRT: DLA core, with GPU fallback.")] = None,
    profile: Annotated[
        list[str] | None,
        typer.Option("--profile", help="TensorRT profile NAME:MIN,OPT,MAX (repeat per input)."),
    ] = None,
    hardware_compat: Annotated[
        str | None, typer.Option(help="TensorRT: none, ampere_plus or same_compute_capability.")
    ] = None,
    version_compatible: Annotated[bool, typer.Option(help="TensorRT: version-compatible engine.")] = False,
    profiling_verbosity: Annotated[
        str | None, typer.Option(help="TensorRT: layer_names_only, detailed or none.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when an up-to-date output exists.")] = False,
    accuracy_budget: Annotated[
        str | None,
        typer.Option(
            help="fp16/int8: keep the most sensitive layers in higher precision until met, e.g. "
            "'cosine>=0.999,top1>=0.99' (also max_abs<=X, snr>=DB); exit 1 if the fp32 fallback misses it."
        ),
    ] = None,
    fp16_analysis: Annotated[
        bool,
        typer.Option(
            "--fp16-analysis/--no-fp16-analysis",
            help="fp16: keep overflowing layers in fp32 automatically (range analysis on --calib-data).",
        ),
    ] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Make the precision artifact and build it for a target with a backend.

    Example: edgedeploy build model.onnx --precision fp16 --target jetson-orin-nano -o out/
    """
    from calibration.sources import parse_shapes
    from edgedeploy.backends import ShapeProfile
    from edgedeploy.build import BuildRequest, CalibrationRequest
    from edgedeploy.build import build as run_build
    from edgedeploy.onnxio import load_onnx
    from edgedeploy.precision.fp16 import Fp16Options
    from edgedeploy.targets import load_target

    ui = _ui()
    tgt = load_target(target)
    tgt.check_precision(precision)
    load_onnx(model, load_external_data=False)
    options: dict[str, Any] = {"force": force}
    for key, value in (
        ("workspace_mb", workspace_mb),
        ("optimization_level", opt_level),
        ("timing_cache", timing_cache),
        ("dla_core", dla_core),
        ("hardware_compatibility", hardware_compat),
        ("profiling_verbosity", profiling_verbosity),
    ):
        if value is not None:
            options[key] = value
    if version_compatible:
        options["version_compatible"] = True
    if memory_pool:
        options["memory_pools_mb"] = _memory_pools(memory_pool)
    if profile:
        options["profiles"] = [ShapeProfile.parse(profile)]
    request = BuildRequest(
        precision=precision,
        target=tgt,
        backend=backend,
        fp16=Fp16Options(keep_io_types=keep_io_types, fp32_ops=_csv(fp32_ops), fp32_nodes=_csv(fp32_nodes)),
        calibration=CalibrationRequest(
            data=calib_data or "",
            algorithm=calib_algorithm,
            samples=calib_samples,
            batch_size=calib_batch_size,
            shapes=parse_shapes(input),
        ),
        options=options,
        fp16_analysis=fp16_analysis,
        accuracy_budget=accuracy_budget,
    )
    if accuracy_budget:
        from edgedeploy.precision.budget import AccuracyBudget

        AccuracyBudget.parse(accuracy_budget)  # refuse a bad budget before any work
    result = run_build(model, request, output, ui)
    state = "up to date, skipped" if result.build.skipped else "built"
    out.print(
        f"{precision} artifact: {result.precision.path} ({result.precision.path.stat().st_size:,} bytes)"
    )
    out.print(f"{result.build.backend} output: {result.build.artifact} ({state})")
    _write_json(json_path, result)


# ---------------------------------------------------------------- compare
@app.command()
def compare(
    reference: Annotated[Path, typer.Argument(help="The fp32 reference ONNX.")],
    candidate: Annotated[Path, typer.Argument(help="The candidate: ONNX (fp16, int8) or TensorRT engine.")],
    data: Annotated[
        str, typer.Option(help="random[:SEED], FILE.npz, a folder of .npz/.npy, or loader.py")
    ] = "random",
    input: Annotated[
        list[str] | None, typer.Option("--input", help="Shape for dynamic dims NAME:SHAPE (random data).")
    ] = None,
    samples: Annotated[int, typer.Option(help="Samples to compare on.")] = 64,
    batch_size: Annotated[int, typer.Option(help="Batch size for dynamic-batch models.")] = 8,
    seed: Annotated[int, typer.Option(help="Seed for random data.")] = 0,
    atol: Annotated[float, typer.Option(help="Absolute tolerance (with --check-allclose).")] = 1e-3,
    rtol: Annotated[float, typer.Option(help="Relative tolerance (with --check-allclose).")] = 1e-3,
    check_allclose: Annotated[
        bool, typer.Option(help="Fail when any element exceeds atol + rtol*|ref|.")
    ] = False,
    min_cosine: Annotated[
        float | None, typer.Option(help="Gate: lowest cosine similarity per output.")
    ] = 0.999,
    min_top1: Annotated[
        float | None, typer.Option(help="Gate: lowest top-1 agreement (batch, classes) outputs.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads.")] = None,
    per_layer: Annotated[
        bool,
        typer.Option(
            "--per-layer", help="Also compare every intermediate tensor both graphs share (ONNX, on the CPU)."
        ),
    ] = False,
    layers_shown: Annotated[int, typer.Option(help="--per-layer: how many tensors to list.")] = 10,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Compare a candidate with the fp32 reference; exit 1 when a gate fails.

    Example: edgedeploy compare model.onnx model.fp16.onnx --data val.npz --min-cosine 0.999
    """
    from calibration.modelinfo import model_io
    from calibration.sources import open_source, parse_shapes
    from edgedeploy.compare import Gates
    from edgedeploy.compare import compare as run_compare
    from edgedeploy.onnxio import load_onnx

    ui = _ui()
    load_onnx(reference, load_external_data=False)
    if not candidate.is_file():
        raise InputError(f"candidate not found: {candidate}")
    if per_layer and candidate.suffix != ".onnx":
        raise InputError(f"--per-layer compares ONNX models on the CPU; {candidate.name} is not one")
    inputs, _ = model_io(reference)
    source = open_source(
        data, inputs, samples=samples, batch_size=batch_size, seed=seed, shapes=parse_shapes(input) or None
    )
    gates = Gates(
        atol=atol, rtol=rtol, min_cosine=min_cosine, min_top1=min_top1, check_allclose=check_allclose
    )
    with ui.progress("compare") as advance:
        result = run_compare(reference, candidate, source, gates, source.describe(), threads)
        advance(1.0)
    table = Table(
        title=f"{candidate.name} vs {reference.name} ({result.iterations} batches, data: {data}; "
        f"run as: {result.mode})"
    )
    for col in (
        "output",
        "max abs",
        "mean abs",
        "p99 abs",
        "max rel",
        "p99 rel",
        "cosine",
        "SNR dB",
        "NaN/Inf",
        "top-1",
        "gate",
    ):
        table.add_column(col, justify="right" if col != "output" else "left")
    for m in result.outputs.values():
        table.add_row(
            m.name,
            f"{m.max_abs:.3g}",
            f"{m.mean_abs:.3g}",
            f"{m.p99_abs:.3g}",
            f"{m.max_rel:.3g}",
            f"{m.p99_rel:.3g}",
            f"{m.cosine:.6f}",
            _fmt(m.snr_db, ".1f"),
            f"{m.nan_count}/{m.inf_count}",
            _fmt(m.top1_agreement, ".4f"),
            "pass" if m.passed else "FAIL",
        )
    out.print(table)
    if source.synthetic:
        ui.warn("compared on synthetic random data: pass --data with real inputs for a meaningful gate")
    if per_layer:
        from edgedeploy.layerwise import compare_layers, print_layers

        with ui.progress("per-layer compare") as advance:
            layers = compare_layers(reference, candidate, source, gates, threads=threads)
            advance(1.0)
        print_layers(layers, out, layers_shown)
        _write_json(json_path, {"compare": result, "per_layer": layers})
    else:
        _write_json(json_path, result)
    if not result.passed:
        failures = "; ".join(
            f"{m.name}: {', '.join(m.failures)}" for m in result.outputs.values() if m.failures
        )
        raise GateFailed(f"accuracy gate failed: {failures}")


# ---------------------------------------------------------------- profile
@app.command()
def profile(
    artifact: Annotated[Path, typer.Argument(help="An ONNX model or a TensorRT engine.")],
    warmup: Annotated[int | None, typer.Option(help="Warm-up iterations (instead of --warmup-ms).")] = None,
    warmup_ms: Annotated[float, typer.Option(help="Warm-up time in ms.")] = 200.0,
    iterations: Annotated[int | None, typer.Option(help="Timed iterations (instead of --duration).")] = None,
    duration: Annotated[float, typer.Option(help="Timed duration in seconds.")] = 3.0,
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes, e.g. 1,2,4,8.")] = "1",
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime intra-op threads.")] = None,
    input: Annotated[
        list[str] | None,
        typer.Option("--input", help="Fixed input shape NAME:SHAPE (overrides batch sizes)."),
    ] = None,
    cuda_graph: Annotated[bool, typer.Option(help="Engines: launch through a captured CUDA graph.")] = False,
    no_data_transfers: Annotated[
        bool, typer.Option(help="Engines: time GPU compute only (no host-device copies).")
    ] = False,
    per_layer: Annotated[
        bool, typer.Option(help="Engines: per-layer times through TensorRT's IProfiler.")
    ] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Latency distribution, throughput and peak memory per batch size (like trtexec's summary).

    Example: edgedeploy profile model.fp16.onnx --batch-sizes 1,8 --duration 5 --json lat.json
    """
    from calibration.sources import parse_shapes
    from edgedeploy.profile import ProfileOptions
    from edgedeploy.profile import profile as run_profile

    ui = _ui()
    if (warmup is not None and warmup < 0) or (iterations is not None and iterations < 1) or duration <= 0:
        raise InputError("--warmup must be >= 0, --iterations >= 1 and --duration > 0")
    options = ProfileOptions(
        warmup_iterations=warmup,
        warmup_ms=warmup_ms,
        iterations=iterations,
        duration_s=duration,
        batch_sizes=tuple(_ints(batch_sizes, "--batch-sizes")),
        threads=threads,
        shapes=parse_shapes(input),
        cuda_graph=cuda_graph,
        no_data_transfers=no_data_transfers,
        per_layer=per_layer,
    )
    with ui.progress(f"profile {artifact.name}") as advance:
        result = run_profile(artifact, options, progress=lambda _b, f: advance(f))
    print_profile(result)
    for warning in result.warnings:
        ui.warn(warning)
    _write_json(json_path, result)


def print_profile(result: Any) -> None:
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
        "peak RSS MB",
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
                _fmt(b.peak_rss_mb, ".1f") if first else "",
                (_fmt(energy, ".3f") if energy is not None else "n/a") if first else "",
            )
    out.print(table)
    out.print("  times in ms; inf/s = inferences (samples) per second")
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


# ---------------------------------------------------------------- bundle
@bundle_app.command("create")
def bundle_create(
    reference: Annotated[Path, typer.Argument(help="The fp32 reference ONNX.")],
    artifacts: Annotated[
        list[Path] | None, typer.Argument(help="More precision artifacts (fp16/int8 ONNX, engines).")
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Bundle folder (a .tar.gz is written beside it).")
    ] = Path("bundle"),
    target: Annotated[
        str, typer.Option(help="Target name; host = this CPU (x86-64-vnni or x86-64-cpu).")
    ] = "x86-64-cpu",
    data: Annotated[
        str, typer.Option(help="Data for the compare summary and the reference outputs.")
    ] = "random",
    samples: Annotated[int, typer.Option(help="Samples to compare on.")] = 32,
    min_cosine: Annotated[float | None, typer.Option(help="Gate recorded for verify.sh.")] = 0.999,
    min_top1: Annotated[float | None, typer.Option(help="Gate recorded for verify.sh.")] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the manifest as JSON here too.")
    ] = None,
) -> None:
    """Pack the fp32 model and its precision artifacts with a manifest and device scripts.

    Example: edgedeploy bundle model.fp32.onnx model.fp16.onnx --target jetson-orin-nano -o bundle
    """
    from calibration.modelinfo import model_io
    from calibration.sources import open_source
    from edgedeploy.compare import Gates
    from edgedeploy.onnxio import load_onnx
    from edgedeploy.pipeline import bundle_artifacts
    from edgedeploy.targets import load_target

    ui = _ui()
    tgt = load_target(target)
    load_onnx(reference, load_external_data=False)
    for path in artifacts or []:
        if not path.is_file():
            raise InputError(f"artifact not found: {path}")
    inputs, _ = model_io(reference)
    source = open_source(data, inputs, samples=samples, batch_size=8)
    result_bundle = bundle_artifacts(
        reference, list(artifacts or []), output, tgt, list(source), source.describe(),
        Gates(min_cosine=min_cosine, min_top1=min_top1),
    )  # fmt: skip
    ui.info(f"bundle: {result_bundle.directory} and {result_bundle.archive}")
    out.print(
        f"bundle {result_bundle.directory} ({result_bundle.files} files, "
        f"{result_bundle.size_bytes:,} bytes), "
        f"archive {result_bundle.archive}"
    )
    _write_json(json_path, result_bundle.manifest)
    failed = [
        a["precision"]
        for a in result_bundle.manifest["artifacts"]
        if not (a["compare"] or {"passed": True})["passed"]
    ]
    if failed:
        raise GateFailed(
            f"accuracy gate failed for {', '.join(failed)} (recorded in the manifest; the device defaults to "
            f"{result_bundle.manifest['primary_precision']})"
        )


@bundle_app.command("verify")
def bundle_verify(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder or .tar.gz.")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Check every file of a bundle against its manifest (sha256 and size); exit 2 when damaged.

    Example: edgedeploy bundle verify bundle.tar.gz
    """
    from edgedeploy.bundle_tools import verify_bundle

    check = verify_bundle(bundle)
    _write_json(json_path, check)
    if not check.ok:
        raise InputError(f"bundle {bundle} is damaged: {'; '.join(check.problems)}")
    out.print(f"bundle {bundle}: ok")


@bundle_app.command("inspect")
def bundle_inspect(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder or .tar.gz.")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the summary as JSON.")] = None,
) -> None:
    """Summarise a bundle: target, precisions, accuracy and latency figures, files.

    Example: edgedeploy bundle inspect bundle/
    """
    from edgedeploy.bundle_tools import inspect_bundle
    from edgedeploy.results import dumps

    summary = inspect_bundle(bundle)
    out.print(dumps(summary), end="")
    _write_json(json_path, summary)


# ---------------------------------------------------------------- run
@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="The pipeline config (edgedeploy.toml).")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Run the whole pipeline from one config file; stages whose inputs did not change are skipped.

    Example: edgedeploy run edgedeploy.toml
    """
    from edgedeploy.config import load_config
    from edgedeploy.pipeline import run_pipeline

    ui = _ui()
    cfg = load_config(config)
    result = run_pipeline(cfg, ui)
    table = Table(title=f"{result.model_name} on {result.target}")
    for col in ("precision", "backend", "size", "p50 ms", "p99 ms", "inf/s", "min cosine", "top-1", "gate"):
        table.add_column(col, justify="left" if col in ("precision", "backend") else "right")
    for p in result.precisions:
        b1: dict[str, Any] = next(iter(((p.profile or {}).get("batch_sizes") or {}).values()), {})
        outs = list(((p.compare or {}).get("outputs") or {}).values())
        cos = min((o.get("cosine") or 0.0 for o in outs), default=None)
        top1 = next((o.get("top1_agreement") for o in outs if o.get("top1_agreement") is not None), None)
        table.add_row(
            p.precision,
            p.backend,
            f"{p.model.stat().st_size:,}",
            _fmt(b1.get("median_ms")),
            _fmt(b1.get("p99_ms")),
            _fmt(b1.get("throughput_ips"), ".1f"),
            _fmt(cos, ".6f"),
            _fmt(top1, ".4f"),
            "pass" if (p.compare or {}).get("passed") else "FAIL",
        )
    out.print(table)
    if not result.stages_run:
        out.print("nothing changed: every stage was up to date")
    _write_json(json_path, result)
    if not result.gates_passed:
        raise GateFailed(
            "accuracy gate failed for "
            + ", ".join(p.precision for p in result.precisions if not (p.compare or {}).get("passed"))
        )


# ---------------------------------------------------------------- targets
@targets_app.callback()
def targets_list(
    ctx: typer.Context,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the list as JSON.")] = None,
) -> None:
    """List the targets. Example: edgedeploy targets; edgedeploy targets show jetson-orin-nano"""
    if ctx.invoked_subcommand is not None:
        return
    from edgedeploy.targets import all_targets

    targets = all_targets()
    table = Table()
    for col in ("name", "kind", "arch", "CC", "DLA", "memory GB", "precisions", "TensorRT"):
        table.add_column(col)
    for t in targets:
        table.add_row(
            t.name,
            t.kind,
            t.gpu_arch,
            t.compute_capability,
            str(t.dla_cores),
            f"{t.memory_gb:g}",
            ",".join(t.precisions),
            ",".join(t.tensorrt) or "-",
        )
    out.print(table)
    _write_json(json_path, targets)


@targets_app.command("show")
def targets_show(
    name: Annotated[str, typer.Argument(help="Target name.")],
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the target as JSON.")] = None,
) -> None:
    """Show one target's profile. Example: edgedeploy targets show jetson-agx-orin"""
    from edgedeploy.results import dumps
    from edgedeploy.targets import load_target

    target = load_target(name)
    out.print(dumps(target), end="")
    _write_json(json_path, target)


# ---------------------------------------------------------------- doctor
@app.command()
def doctor(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
) -> None:
    """Say what this machine has (Python, ONNX stack, torch, TensorRT, GPU, Jetson) and what to install.

    Example: edgedeploy doctor
    """
    from edgedeploy.doctor import diagnose

    report = diagnose()
    table = Table(title="edgedeploy doctor")
    for col in ("component", "status", "details"):
        table.add_column(col)
    for item in report:
        table.add_row(
            item.name,
            "ok" if item.ok else ("-" if item.optional else "MISSING"),
            item.detail + (f"  [{item.hint}]" if item.hint and not item.ok else ""),
        )
    out.print(table)
    _write_json(json_path, report)


# ---------------------------------------------------------------- demo
@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", help="Working folder for the demo.")] = Path(
        "edgedeploy-demo"
    ),
    duration: Annotated[float, typer.Option(help="Profiling seconds per precision.")] = 2.0,
    target: Annotated[
        str, typer.Option(help="Target name; host = this CPU (x86-64-vnni or x86-64-cpu).")
    ] = "x86-64-cpu",
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the table as JSON.")] = None,
) -> None:
    """Train a small CNN on scikit-learn's digits and run the whole pipeline on it for every precision.

    Example: edgedeploy demo --out /tmp/demo
    """
    from edgedeploy.demo import run_demo

    ui = _ui()
    result = run_demo(out_dir, ui, target=target, duration_s=duration)
    fp32_size = next((r.size_bytes for r in result.rows if r.precision == "fp32"), None)
    table = Table(
        title=f"digits CNN on {target} (ONNX Runtime, CPU, batch 1); "
        f"torch fp32 held-out accuracy {result.fp32_torch_accuracy:.4f}"
    )
    for col in (
        "precision",
        "size",
        "vs fp32",
        "p50 ms",
        "p99 ms",
        "inf/s",
        "cosine",
        "top-1 agree",
        "accuracy",
        "energy mJ",
        "gate",
        "note",
    ):
        table.add_column(col, justify="left" if col in ("precision", "note", "gate") else "right")
    for r in result.rows:
        ratio = f"{r.size_bytes / fp32_size:.2f}x" if fp32_size else "-"
        table.add_row(
            r.precision,
            f"{r.size_bytes / 1024:.1f} KiB",
            ratio,
            _fmt(r.p50_ms),
            _fmt(r.p99_ms),
            _fmt(r.throughput_ips, ".0f"),
            _fmt(r.cosine, ".6f"),
            _fmt(r.top1_agreement, ".4f"),
            f"{r.task_accuracy:.4f}",
            _fmt(r.energy_mj, ".3f") if r.energy_mj is not None else "n/a",
            "pass" if r.passed else "FAIL",
            r.note,
        )
    out.print(table)
    if result.bundle:
        out.print(f"bundle: {result.bundle['directory']} and {result.bundle['archive']}")
    out.print(f"demo finished in {result.seconds:.1f} s")
    _write_json(
        json_path,
        {
            "rows": result.rows,
            "seconds": result.seconds,
            "fp32_torch_accuracy": result.fp32_torch_accuracy,
            "bundle": result.bundle,
        },
    )


def _register_optional_commands() -> None:
    """Commands that live with their own stage (calibration, FP16 analysis) register themselves."""
    import importlib

    for module, name in (("edgedeploy.cli_calibrate", "calibrate"), ("edgedeploy.cli_analyze", "analyze")):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(mod, "register"):
            mod.register(app)
        elif hasattr(mod, f"{name}_command"):
            app.command(name)(getattr(mod, f"{name}_command"))


@app.callback(invoke_without_command=True)
def _main(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        out.print(f"edgedeploy {__version__}")
        raise typer.Exit(0)


def _fail(message: str, code: int) -> NoReturn:
    text = escape(message)
    prefix = {2: "[red]error:[/red]", 1: "[red]FAILED:[/red]"}.get(code, "[yellow]stopped:[/yellow]")
    err.print(f"{prefix} {text}", highlight=False)
    raise SystemExit(code)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: map our errors to one line and an exit code."""
    from calibration.errors import CalibrationError

    _register_optional_commands()
    try:
        app(args=argv, prog_name="edgedeploy")  # click's standalone mode: usage errors exit 2
    except EdgeDeployError as exc:
        _fail(str(exc), exc.exit_code)
    except CalibrationError as exc:
        _fail(str(exc), 2)
    except KeyboardInterrupt:
        _fail(INTERRUPTED, 130)
    except SystemExit as exc:
        if exc.code == 130:  # click turned Ctrl-C into exit 130 without a word
            _fail(INTERRUPTED, 130)
        raise
    raise SystemExit(0)


INTERRUPTED = "interrupted (Ctrl-C); no file was half-written, and a rerun resumes from the finished stages"


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
