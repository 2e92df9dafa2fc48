"""``edgedeploy bundle``: pack artifacts into a deployment bundle (the default), or verify / inspect one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from edgedeploy.cli.common import (
    DataSpec,
    InputShapes,
    JsonOutput,
    PreprocessFile,
    TargetName,
    load_preprocess,
    make_ui,
    out,
    write_json,
)
from edgedeploy.cli.guard import reads_beside
from edgedeploy.errors import GateFailed, InputError, SettingError, naming_guessed_dims, not_a_file
from edgedeploy.fileio import not_written
from edgedeploy.interrupts import deferred
from edgedeploy.ui import human_size


class _DefaultCreateGroup(TyperGroup):
    """``edgedeploy bundle MODEL ... -o DIR`` means ``bundle create``; verify and inspect stay subcommands."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args.insert(0, "create")
        return super().resolve_command(ctx, args)


bundle_app = typer.Typer(
    cls=_DefaultCreateGroup,
    no_args_is_help=True,
    help="Pack artifacts into a deployment bundle, or verify / inspect one.\n\n"
    "Example: edgedeploy bundle m.fp32.onnx m.fp16.onnx -o bundle",
)


def _read_beside(arguments: dict[str, Any]) -> list[Path]:
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.pipeline.pack import read_beside

    return read_beside(arguments["reference"], list(arguments.get("artifacts") or []))


@reads_beside(_read_beside)
def create_command(
    reference: Annotated[Path, typer.Argument(help="The fp32 reference ONNX.")],
    artifacts: Annotated[
        list[Path] | None, typer.Argument(help="More precision artifacts (fp16/int8 ONNX, engines).")
    ] = None,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Bundle folder (a .tar.gz is written beside it).")
    ] = Path("bundle"),
    target: TargetName = "x86-64-cpu",
    data: DataSpec = "random",
    preprocess: PreprocessFile = None,
    input: InputShapes = None,
    samples: Annotated[int, typer.Option(help="Samples to compare on.")] = 32,
    min_cosine: Annotated[
        float | None,
        typer.Option(
            help="Gate recorded for verify.sh (as compare's, scale too: |norm ratio - 1| <= "
            "sqrt(1 - min_cosine**2))."
        ),
    ] = 0.999,
    min_top1: Annotated[
        list[str] | None,
        typer.Option(
            help="Gate recorded for verify.sh, as compare's: VALUE for every 2-D float output, "
            "NAME:VALUE for the named outputs only, or both (VALUE for the outputs not named)."
        ),
    ] = None,
    profiles: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            help="TensorRT shape profile the device builds with, NAME:MIN,OPT,MAX (repeat per input; an "
            "input named again starts the next profile). Default: the engines' profiles, else batch 1 "
            "to the reference batch.",
        ),
    ] = None,
    json_path: JsonOutput = None,
) -> None:
    """Pack the fp32 model and its precision artifacts with a manifest and device scripts.

    Example: edgedeploy bundle model.fp32.onnx model.fp16.onnx --target jetson-orin-nano -o bundle
    """
    with deferred():  # heavy imports are not interrupt-safe
        from calibration.modelinfo import model_io
        from calibration.sources import open_source, parse_shapes, shapes_unused
        from edgedeploy.onnxio import load_onnx
        from edgedeploy.options import parse_profiles, setting_named
        from edgedeploy.pipeline.pack import bundle_artifacts
        from edgedeploy.stages.compare import Gates
        from edgedeploy.stages.compare.gates import parse_min_top1
        from edgedeploy.targets import load_target

    ui = make_ui()
    if output.name.endswith((".tar.gz", ".tgz")):  # it made a folder bb.tar.gz and bb.tar.gz.tar.gz
        folder = output.name.removesuffix(".tar.gz").removesuffix(".tgz")
        raise InputError(
            f"-o {output}: -o names the bundle's folder, and its archive is written beside it as "
            f"FOLDER.tar.gz: give -o {output.with_name(folder)}"
        )
    # the archive lies beside the folder a symlinked -o points to (stages/bundle/make.py)
    real = output.resolve()
    not_written(json_path, files=[real.with_name(real.name + ".tar.gz")], folders=[output])
    tgt = load_target(target)
    shapes = parse_shapes(input)
    shapes_unused(data, shapes)
    load_onnx(reference, load_external_data=False)
    for path in artifacts or []:
        if not path.is_file():
            raise not_a_file("artifact", path)
    shape_profiles = parse_profiles(profiles) if profiles else []
    try:  # said as the flags: "--min-cosine must lie in (-1, 1]"
        gates = Gates(min_cosine=min_cosine, min_top1=parse_min_top1(min_top1 or []))
    except SettingError as exc:
        raise setting_named(exc, from_config=False) from None
    inputs, outputs = model_io(reference)
    gates.check_top1_outputs([o.name for o in outputs], reference.name)
    prep = load_preprocess(preprocess)
    source = open_source(
        data, inputs, samples=samples, batch_size=8, image_options=prep, shapes=shapes or None
    )
    for note in source.notes(f"--preprocess {preprocess}" if preprocess else None):
        ui.warn(note)
    with naming_guessed_dims(source.fed_as_one):
        result_bundle = bundle_artifacts(
            reference, list(artifacts or []), output, tgt, list(source), source.describe(),
            gates, ui=ui, profiles=shape_profiles,
        )  # fmt: skip
    ui.info(f"bundle: {result_bundle.directory} and {result_bundle.archive}")
    out.print(
        f"bundle {result_bundle.directory} ({result_bundle.files} files, "
        f"{human_size(result_bundle.size_bytes)}), "
        f"archive {result_bundle.archive}"
    )
    report = result_bundle.manifest.get("report")
    if report:
        out.print(f"report: {result_bundle.directory / report['html']}")
    write_json(json_path, result_bundle.manifest)
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


def _refuse_non_bundle(path: Path) -> None:
    """A file that is neither a folder nor a .tar.gz (a model, a manifest) is not a damaged bundle."""
    if path.is_file() and not path.name.endswith((".tar.gz", ".tgz")):
        raise InputError(f"{path} is not a bundle: give a bundle folder or its .tar.gz")


def verify_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder or .tar.gz.")],
    json_path: JsonOutput = None,
) -> None:
    """Check every file of a bundle against its manifest (sha256 and size); exit 2 when damaged.

    Example: edgedeploy bundle verify bundle.tar.gz
    """
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.stages.bundle import verify_bundle

    _refuse_non_bundle(bundle)
    check = verify_bundle(bundle)
    write_json(json_path, check)
    if not check.ok:
        raise InputError(f"bundle {bundle} is damaged: {check.summary()}")
    out.print(f"bundle {bundle}: ok")


def inspect_command(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder or .tar.gz.")],
    json_path: JsonOutput = None,
) -> None:
    """Summarise a bundle: target, precisions, accuracy and latency figures, files.

    Example: edgedeploy bundle inspect bundle/
    """
    with deferred():  # heavy imports are not interrupt-safe
        from edgedeploy.results import dumps
        from edgedeploy.stages.bundle import inspect_bundle

    _refuse_non_bundle(bundle)
    summary = inspect_bundle(bundle)
    if not summary["valid"]:  # one line, as for a damaged archive; `bundle verify` lists every problem
        raise InputError(f"bundle {bundle} is damaged: {'; '.join(summary['problems'][:3])}")
    out.print(dumps(summary), end="")
    write_json(json_path, summary)


bundle_app.command("create")(create_command)
bundle_app.command("verify")(verify_command)
bundle_app.command("inspect")(inspect_command)


def register(app: typer.Typer) -> None:
    app.add_typer(bundle_app, name="bundle")
