"""Reading, checking and atomically saving ONNX models, with user-facing errors.

Models over 2 GB cannot live in one protobuf: they are saved with external data (one
``.data`` file beside the model) and checked by path, as onnx's checker requires.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnx

from calibration.modelinfo import TensorSpec, graph_io, no_outputs
from edgedeploy.errors import InputError, first_line, not_a_file
from edgedeploy.fileio import atomic_path

TWO_GB = 2**31 - 1
ONNX_SUFFIX = ".onnx"


def is_onnx_path(path: str | os.PathLike[str]) -> bool:
    """Whether a path (a model source, an artifact, a file name) names an ONNX file: its suffix .onnx
    whatever its case (``M.ONNX``), as model sources and data files are told apart (stages/export.py,
    calibration/sources.py). Anything else a command is given to run is an engine plan."""
    return os.fspath(path).lower().endswith(ONNX_SUFFIX)


def onnx_stem(name: str) -> str:
    """A file name without its .onnx suffix, whatever its case (``m.fp16.ONNX`` -> ``m.fp16``)."""
    return name[: -len(ONNX_SUFFIX)] if is_onnx_path(name) else name


# the precisions a build writes, each put in its artifact's name before .onnx (``m.fp16.onnx``)
PRECISION_MARKERS = (".fp32", ".fp16", ".int8")


def model_stem(name: str) -> str:
    """The STEM a build or a calibration names its output files after (``STEM.int8.onnx``,
    ``STEM.calib.json``): the file name without its .onnx suffix and the precision markers before it,
    whatever their case (``m.onnx``, ``m.fp32.onnx``, ``M.FP16.ONNX`` -> ``m``, ``m``, ``M``), so a
    model already of a precision is not named twice (``M.FP16.fp16.onnx``)."""
    stem = onnx_stem(name)
    for marker in PRECISION_MARKERS:
        if stem.lower().endswith(marker):
            stem = stem[: -len(marker)]
    return stem


def load_onnx(path: str | os.PathLike[str], *, load_external_data: bool = True) -> onnx.ModelProto:
    """Load an ONNX model; a missing, empty or corrupt file, or a model without outputs, is an
    InputError naming it."""
    p = Path(path)
    if not p.is_file():
        raise not_a_file("model file", p)
    if p.stat().st_size == 0:
        raise InputError(f"model file is empty: {p}")
    try:
        model = onnx.load(os.fspath(p), load_external_data=load_external_data)
    except Exception as exc:
        check_external_data(p)  # a missing .data file is named, not blamed on the model
        raise InputError(
            f"cannot read ONNX model {p}: not a valid ONNX file ({type(exc).__name__})"
        ) from None
    if not model.graph.node:
        raise InputError(f"cannot read ONNX model {p}: the graph has no nodes (truncated or not ONNX)")
    if (refusal := no_outputs(model, p)) is not None:
        raise InputError(refusal)
    return model


def check_external_data(path: str | os.PathLike[str]) -> None:
    """Refuse a model whose external data files (``location`` of its initializers) are missing."""
    p = Path(path)
    try:
        model = onnx.load(os.fspath(p), load_external_data=False)
    except Exception:
        return
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not (p.parent / location).is_file():
            raise InputError(
                f"ONNX model {p} keeps its weights in {location or '(no location)'}, which is missing: "
                "copy it beside the model"
            )


def check_model(path: str | os.PathLike[str], name: str | None = None) -> None:
    """Run onnx's full checker on the file (calibration.artifacts.full_check: external data works,
    also where shape inference needs an external tensor).

    A graph input or output without a shape (not even a rank; ONNX Runtime runs such models) is
    named, since the checker's own words ("Field 'shape' of 'type' is required") do not say which.
    ``name``: how the messages name the model (default "ONNX model PATH"), for a scratch file."""
    from calibration.artifacts import full_check

    what = name or f"ONNX model {path}"
    try:
        full_check(path)
    except Exception as exc:
        first = first_line(exc)
        if "'shape'" in first:
            model = onnx.load(os.fspath(path), load_external_data=False)
            for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
                for v in values:
                    if v.type.HasField("tensor_type") and not v.type.tensor_type.HasField("shape"):
                        how = (
                            f"polygraphy surgeon sanitize --override-input-shapes {v.name}:[...]"
                            if kind == "input"
                            else "onnx.shape_inference"
                        )
                        raise InputError(
                            f"{what} fails onnx.checker: its {kind} '{v.name}' has no shape "
                            f"(not even a rank); give it one in the model (e.g. {how})"
                        ) from None
        raise InputError(f"{what} fails onnx.checker: {first}") from None


def save_onnx(
    model: onnx.ModelProto,
    dest: str | os.PathLike[str],
    check: Callable[[Path, bytes | None], object] | None = None,
    *,
    external: bool = False,
) -> Path:
    """Save atomically; models over 2 GB (or every model, with ``external``) get their weights in
    ``<name>.data`` beside them.

    ``check`` runs on the temporary file before it takes its name (e.g. :func:`verify`): an
    artifact that fails it never appears under ``dest``. It gets the file's bytes as written too
    (None for a model saved with external data), to check them without reading the file back.
    What it returns is not used (verify's "loaded only" reason: the caller's check keeps it).
    """
    dest = Path(dest)
    data: bytes | None = None
    if not external:
        try:  # one serialization, written as is (sizing first would walk the message twice more)
            data = model.SerializeToString()
        except Exception:  # protobuf refuses to serialize messages over 2 GB
            data = None
    if data is not None and len(data) > TWO_GB:
        data = None
    with atomic_path(dest, suffix=".onnx") as tmp:
        if data is None:
            data_name = dest.name + ".data"
            onnx.save_model(
                model,
                os.fspath(tmp),
                save_as_external_data=True,
                all_tensors_to_one_file=True,
                location=data_name,
                size_threshold=1024,
            )
        else:
            with open(tmp, "wb") as fh:
                fh.write(data)
        if check is not None:
            check(tmp, data)
    return dest


def io_specs(model: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    return graph_io(model)


def external_data_files(path: str | os.PathLike[str]) -> list[Path]:
    """The files a model's external data lives in (they must travel with the .onnx)."""
    p = Path(path)
    if not is_onnx_path(p) or not p.is_file():
        return []
    try:
        model = onnx.load(os.fspath(p), load_external_data=False)
    except Exception:
        return []
    locations: list[str] = []
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location and location not in locations:
                locations.append(location)
    return [p.parent / loc for loc in locations if (p.parent / loc).is_file()]


def copy_model(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Copy an ONNX model and its external data; returns every file written.

    A model with external data is written with its weights in ``<dest name>.data``: the copy's
    data is its own. (Copied under their own names, two models whose data files were both
    ``weights.bin`` shared one in the output folder, and the first model's copy silently read the
    second's weights; a location in a subfolder, ``data/w.bin``, was not copied at all.)
    """
    import shutil

    src, dest = Path(src), Path(dest)
    if src.resolve() == dest.resolve():
        return [dest, *external_data_files(dest)]
    if external_data_files(src):  # (one whose data file is missing is copied as it is: verify refuses it)
        save_onnx(onnx.load(os.fspath(src)), dest, external=True)
        return [dest, dest.parent / f"{dest.name}.data"]
    with atomic_path(dest, suffix=".onnx") as tmp:
        shutil.copyfile(src, tmp)
    return [dest]


def refuse_unloadable(model: str | os.PathLike[str]) -> None:
    """InputError naming ``model`` and ONNX Runtime's reason when ONNX Runtime cannot load it
    (:func:`calibration.artifacts.unloadable`); for the failure paths of what is made from it."""
    from calibration.artifacts import unloadable

    refusal = unloadable(model)
    if refusal is not None:
        raise InputError(refusal)


def verify(
    path: str | os.PathLike[str],
    feed: Mapping[str, Any] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    companions: Sequence[str | os.PathLike[str]] = (),
    what: str = "the artifact",
    hint: str = "",
    fed: str = "random inputs",
    content: bytes | None = None,
    model: onnx.ModelProto | None = None,
) -> str | None:
    """The shared artifact check (calibration.artifacts.verify_artifact) as a one-line InputError;
    returns None when the artifact ran, else why it was loaded only (for the caller to say so).

    Full onnx checker, ONNX Runtime load at the default optimization level and one run; a failing
    artifact is removed (with ``companions``) before the error is raised. ``content``: the file's
    bytes, when the caller has just written them (see :func:`save_onnx`), and ``model`` the model
    they serialize, when the caller holds it (not parsed again for the load's optimizer choice).
    ``fed``: what ``feed`` is, in the reason it returns.
    """
    from calibration.artifacts import ArtifactError, SourceModelError, verify_artifact

    try:
        return verify_artifact(
            path, feed, source=source, companions=companions, what=what, fed=fed, content=content, model=model
        )
    except SourceModelError as exc:  # the hint is about the artifact: not for a model ONNX Runtime refuses
        raise InputError(str(exc)) from None
    except ArtifactError as exc:
        raise InputError(f"{exc}{'; ' + hint if hint else ''}") from None
