"""``edgedeploy compare``: a candidate against the fp32 reference, gated; tables of outputs and layers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from edgedeploy.cli.common import (
    BatchSize,
    DataSpec,
    InputShapes,
    JsonOutput,
    PreprocessFile,
    Seed,
    Threads,
    check_seed,
    err,
    fmt,
    load_preprocess,
    make_ui,
    out,
    typed,
    write_json,
)
from edgedeploy.errors import GateFailed, InputError, SettingError, naming_guessed_dims, not_a_file
from edgedeploy.interrupts import deferred
from edgedeploy.ui import cosine_figure

if TYPE_CHECKING:
    from edgedeploy.stages.compare import CompareResult, LayerError, LayerwiseResult


def compare_command(
    ctx: typer.Context,
    reference: Annotated[Path, typer.Argument(help="The fp32 reference ONNX.")],
    candidate: Annotated[Path, typer.Argument(help="The candidate: ONNX (fp16, int8) or TensorRT engine.")],
    data: DataSpec = "random",
    preprocess: PreprocessFile = None,
    input: InputShapes = None,
    samples: Annotated[int, typer.Option(help="Samples to compare on.")] = 64,
    batch_size: BatchSize = 8,
    seed: Seed = 0,
    atol: Annotated[float, typer.Option(help="Absolute tolerance (with --check-allclose).")] = 1e-3,
    rtol: Annotated[float, typer.Option(help="Relative tolerance (with --check-allclose).")] = 1e-3,
    check_allclose: Annotated[
        bool, typer.Option(help="Fail when any element exceeds atol + rtol*|ref|.")
    ] = False,
    min_cosine: Annotated[
        float | None,
        typer.Option(
            help="Gate: lowest cosine similarity per output; it fails a float output off in scale too, "
            "|norm ratio - 1| > sqrt(1 - min_cosine**2) (the norm ratio is norm(candidate) / "
            "norm(reference): 100x the reference has cosine 1)."
        ),
    ] = 0.999,
    min_top1: Annotated[
        list[str] | None,
        typer.Option(
            help="Gate: lowest argmax agreement of 2-D float outputs (top-1 of (batch, classes) scores): "
            "VALUE for every such output, NAME:VALUE for the named outputs only (repeat, or several "
            "in one value), or both: '0.9 logits:0.99' holds logits to 0.99 and every other such output "
            "to 0.9 (as Polygraphy's --atol)."
        ),
    ] = None,
    threads: Threads = None,
    per_layer: Annotated[
        bool,
        typer.Option(
            "--per-layer",
            help="Also compare every intermediate tensor both graphs share (ONNX, on the CPU): float "
            "ones by cosine, bool and integer ones by their share of equal elements.",
        ),
    ] = False,
    layers_shown: Annotated[int, typer.Option(help="--per-layer: how many tensors to list.", min=1)] = 10,
    json_path: JsonOutput = None,
) -> None:
    """Compare a candidate with the fp32 reference; exit 1 when a gate fails.

    Example: edgedeploy compare model.onnx model.fp16.onnx --data val.npz --min-cosine 0.999
    """
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.feeds import static_batch
        from calibration.modelinfo import model_io
        from calibration.sources import open_source, parse_shapes, shapes_unused
        from edgedeploy.onnxio import is_onnx_path, load_onnx
        from edgedeploy.options import setting_named
        from edgedeploy.stages.compare import Gates, compare, compare_layers
        from edgedeploy.stages.compare.gates import parse_min_top1
        from edgedeploy.stages.compare.layers import ReferenceRun, conversion_notice
        from edgedeploy.stages.compare.outputs import candidate_batches, unapplied

    ui = make_ui()
    check_seed(ctx, data, seed, ui)
    shapes = parse_shapes(input)
    shapes_unused(data, shapes)
    load_onnx(reference, load_external_data=False)
    if not candidate.is_file():
        raise not_a_file("candidate", candidate)
    if per_layer and not is_onnx_path(candidate):
        raise InputError(f"--per-layer compares ONNX models on the CPU; {candidate.name} is not one")
    known_io = {reference: model_io(reference)}  # read once: compare() is given them too
    inputs, ref_outputs = known_io[reference]
    batch_given = "batch_size" in typed(ctx, "batch_size")  # replaces dim 0 of --input for random data
    if is_onnx_path(candidate) and static_batch(inputs) is None:  # a candidate fixed at one batch
        # (exported --static) refused the default batches of 8 in Polygraphy's words only
        known_io[candidate] = model_io(candidate)
        fixed = static_batch(known_io[candidate][0])
        if fixed is not None and fixed != batch_size:
            if batch_given:
                raise InputError(
                    f"{candidate.name} takes a batch of {fixed} only (its batch dim is fixed): "
                    f"give --batch-size {fixed}"
                )
            ui.info(f"{candidate.name} takes a batch of {fixed} only: comparing in batches of {fixed}")
            batch_size, batch_given = fixed, True
    ranges = candidate_batches(reference, candidate, inputs)  # an engine: the batches its profiles take
    if ranges and not any(lo <= batch_size <= hi for lo, hi in ranges):
        below = [hi for lo, hi in ranges if lo <= batch_size]  # the largest it takes below, else the least
        near = max(below) if below else min(lo for lo, _hi in ranges)
        spans = " or ".join(f"{lo}..{hi}" for lo, hi in ranges)
        takes = f"{candidate.name} takes batches of {spans} (its shape profile{'s' * (len(ranges) > 1)})"
        if batch_given:
            raise InputError(f"{takes}: give --batch-size {near}")
        ui.info(f"{takes}: comparing in batches of {near}")
        batch_size, batch_given = near, True
    source = open_source(
        data, inputs, samples=samples, batch_size=batch_size, seed=seed, shapes=shapes or None,
        image_options=load_preprocess(preprocess), batch_from_shapes=not batch_given,
    )  # fmt: skip
    try:  # said as the flags: "--min-cosine must lie in (-1, 1]"
        gates = Gates(
            atol=atol, rtol=rtol, min_cosine=min_cosine, min_top1=parse_min_top1(min_top1 or []),
            check_allclose=check_allclose,
        )  # fmt: skip
    except SettingError as exc:
        raise setting_named(exc, from_config=False) from None
    gates.check_top1_outputs([o.name for o in ref_outputs], reference.name)
    with ui.progress("compare") as advance:
        prepared = ReferenceRun(reference)  # as both comparisons run it: a conversion made once
        with naming_guessed_dims(source.fed_as_one):
            result = compare(
                reference, candidate, source, gates, source.describe(), threads, prepared=prepared,
                known_io=known_io,
            )  # fmt: skip
        advance(1.0)
    if result.reference_conversion:  # ONNX Runtime cannot load the file: ran its fp16 build's conversion
        ui.info(conversion_notice(reference, result.reference_conversion))
    print_outputs(result, reference, candidate, data)
    for warning in unapplied(result):
        ui.warn(warning)
    if source.synthetic:
        ui.warn("compared on synthetic random data: pass --data with real inputs for a meaningful gate")
    for note in source.notes(f"--preprocess {preprocess}" if preprocess else None):
        ui.warn(note)
    given = typed(ctx, "atol", "rtol", "layers_shown")
    if not check_allclose and given & {"atol", "rtol"}:
        ui.warn("--atol/--rtol gate only with --check-allclose: not applied")
    if not per_layer and "layers_shown" in given:
        ui.warn("--layers-shown lists the tensors of --per-layer: not used without it")
    if per_layer:
        with ui.progress("per-layer compare") as advance:
            layers = compare_layers(reference, candidate, source, gates, threads=threads, prepared=prepared)
            advance(1.0)
        print_layers(layers, layers_shown)
        write_json(json_path, {"compare": result, "per_layer": layers})
    else:
        write_json(json_path, result)
    if not result.passed:
        failures = "; ".join(
            f"{m.name}: {', '.join(m.failures)}" for m in result.outputs.values() if m.failures
        )
        raise GateFailed(f"accuracy gate failed: {failures}")


def batches(count: int) -> str:
    """``count`` batches in words: "1 batch", "3 batches"."""
    return f"{count} batch{'es' * (count != 1)}"


def print_outputs(result: CompareResult, reference: Path, candidate: Path, data: str) -> None:
    """One row per output: errors, cosine, SNR, NaN/Inf, argmax agreement and the gate."""
    table = Table(
        title=f"{candidate.name} vs {reference.name} ({batches(result.iterations)}, data: {data}; "
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
        "norm ratio",
        "SNR dB",
        "NaN/Inf",
        "argmax agr.",
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
            cosine_figure(m.cosine, result.gates.min_cosine),
            fmt(m.norm_ratio, ".6f"),
            fmt(m.snr_db, ".1f"),
            f"{m.nan_count}/{m.inf_count}"
            + (f" ({m.nonfinite_mismatches} unlike ref)" if m.nonfinite_mismatches else ""),
            fmt(m.top1_agreement, ".4f") if m.equal_share is None else f"{m.equal_share:.4f} equal",
            "pass" if m.passed else "FAIL",
        )
    out.print(table)


def print_layers(result: LayerwiseResult, limit: int = 10) -> None:
    """Two tables: the first tensors over tolerance, and the largest errors, both in graph order."""

    def table(title: str, rows: list[LayerError]) -> Table:
        t = Table(title=title)
        for col in (
            "#",
            "tensor",
            "op (producer)",
            "cosine",
            "SNR dB",
            "max abs",
            "max abs / max|ref|",
            "NaN/Inf",
            "why",
        ):
            t.add_column(col, justify="right" if col not in ("tensor", "op (producer)", "why") else "left")
        for e in rows:
            t.add_row(
                str(e.order),
                e.tensor,
                f"{e.op} ({e.producer})",
                cosine_figure(e.cosine, result.gates.min_cosine)
                if e.equal_share is None
                else f"{e.equal_share:.4f} equal",
                "-" if e.snr_db is None else f"{e.snr_db:.1f}",
                f"{e.max_abs:.3g}",
                f"{e.rel_max:.3g}",
                f"{e.nan_inf}" + (f" ({e.nonfinite_mismatches} unlike ref)" * bool(e.nonfinite_mismatches)),
                "; ".join(e.why),
            )
        return t

    out.print(
        f"per-layer: {len(result.layers)} shared tensors, {batches(result.iterations)}, "
        f"candidate run as {result.mode}"
    )
    if result.not_compared:
        err.print(f"per-layer: not compared (no figure fits them): {', '.join(result.not_compared)}")
    first = result.first_exceeding(limit)
    if first:
        out.print(table("first tensors over tolerance (graph order)", first))
    else:
        out.print("no intermediate tensor exceeds the tolerance")
    out.print(table("largest errors (graph order)", result.largest(limit)))


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_command)
