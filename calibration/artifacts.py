"""The one check every ONNX artifact passes before a stage calls it built.

:func:`verify_artifact` runs onnx's full checker on the file (:func:`full_check`: external data works),
loads it in ONNX Runtime at the default optimization level (the one a deployment runs, where
its fusions can still reject a graph the checker accepts) and runs it once. When the run fails
on a feed that the source model also fails on, the data is at fault, not the artifact: the load
is then the check; where the source model fails onnx's full check itself (onnx's function
expansion rejects a few valid models), the artifact is held to the structural check the source
passes. A failing artifact is removed, with its companions, so that it is never
left beside good ones, and the error is one line naming what failed.

Lives in calibration/ (the lowest layer) because both calibration's Q/DQ writer and every
edgedeploy stage use it. Hand-written glue around onnx.checker and onnxruntime.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import onnx

from calibration.errors import CalibrationError
from calibration.graphs import ort_crashing_optimizers, ort_error
from calibration.observers import no_spinning


class ArtifactError(CalibrationError):
    """An artifact we wrote fails the checker or ONNX Runtime: it has been removed."""


class SourceModelError(ArtifactError):
    """ONNX Runtime cannot load the artifact because it cannot load the model it was made from
    either: the model is at fault, not the conversion (advice about the artifact does not apply)."""


def unloadable(model: str | os.PathLike[str]) -> str | None:
    """None when ONNX Runtime loads ``model`` (as :func:`verify_artifact` loads an artifact), else one
    line naming it and ONNX Runtime's reason. For the failure paths of what is made from a model: a
    model ONNX Runtime refuses (two nodes of one name, an opset it does not know) is said to be at
    fault itself, not what was made of it."""
    if (why := load_error(model)) is None:
        return None
    return f"ONNX Runtime cannot load {Path(model).name} itself ({why}); nothing made from it is kept"


def load_error(model: str | os.PathLike[str] | onnx.ModelProto) -> str | None:
    """ONNX Runtime's one-line reason it cannot load ``model`` (a file, or one in memory) as the
    check loads it, or None when it loads."""
    try:
        if isinstance(model, onnx.ModelProto):
            _session(model.SerializeToString(), model)
        else:
            _session(os.fspath(model))
    except Exception as exc:
        return ort_error(exc)
    return None


def _options() -> Any:
    """The check's session options: ONNX Runtime's default level, one line per error."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors reach the user as one line, not as ORT log lines
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # the pool's idle thread sleeps: spinning cost captcha-rec's check (load and one run of one
    # sample) 0.06 s of its 0.15 s CPU; neither what loads nor what runs depends on it
    no_spinning(options)
    return options


def _session(model: str | bytes, proto: onnx.ModelProto | None = None) -> Any:
    """The check's session of ``model`` at ONNX Runtime's default level; ``proto``: the model it
    holds, when the caller has it in memory (else it is parsed here, for ort_crashing_optimizers)."""
    import onnxruntime as ort

    options = _options()
    if proto is None:
        proto = (
            onnx.load_from_string(model)
            if isinstance(model, bytes)
            else onnx.load(model, load_external_data=False)
        )
    return ort.InferenceSession(
        model, options, providers=["CPUExecutionProvider"], disabled_optimizers=ort_crashing_optimizers(proto)
    )


def _runs(model: str | bytes, feed: Mapping[str, Any], session: Any = None) -> str | None:
    """None when ``model`` (or its loaded ``session``) runs on ``feed``, else ONNX Runtime's reason."""
    from calibration.ortvalues import ort_feed

    try:
        session = session or _session(model)
        wanted = {i.name: i.type for i in session.get_inputs()}
        fitted = {k: _fit(v, wanted[k]) for k, v in feed.items() if k in wanted}
        session.run(None, ort_feed(fitted))
    except Exception as exc:
        return ort_error(exc)
    return None


def model_outputs(
    model: onnx.ModelProto | str | os.PathLike[str], feed: Mapping[str, Any], *, reference: bool = False
) -> list[Any]:
    """``model``'s outputs (one in memory, or a file: read by ONNX Runtime itself) on ``feed``
    (graph order) from the check's ONNX Runtime session or, with ``reference`` and where ONNX
    Runtime cannot load it (an opset-6 PRelu, an IR 3 file), from onnx's reference evaluator.
    Raises ONNX Runtime's error (the evaluator's where it ran instead). Not where ONNX Runtime loads
    the model and refuses ``feed`` (an iou_threshold of NonMaxSuppression outside [0, 1]): the
    evaluator checks no such thing, and its outputs are no reference then."""
    from calibration.ortvalues import ort_feed

    try:
        session = _in_memory(model) if isinstance(model, onnx.ModelProto) else _session(os.fspath(model))
    except Exception:
        if not reference:
            raise
        return reference_outputs(model if isinstance(model, onnx.ModelProto) else onnx.load(model), feed)
    wanted = {i.name: i.type for i in session.get_inputs()}
    fitted = {k: _fit(v, wanted[k]) for k, v in feed.items() if k in wanted}
    return list(session.run(None, ort_feed(fitted)))


def _in_memory(model: onnx.ModelProto) -> Any:
    """The check's session of ``model``, its large weights handed to ONNX Runtime as arrays
    (:func:`~calibration.observers.in_memory_session`) instead of serialized with it and parsed
    again: the same graph, optimized alike, so the same outputs bit for bit (a test pins it). An
    opset conversion's check (:mod:`calibration.conversion`) builds two such sessions, of the
    source and of the converted model, before any calibration work; on captcha-rec (54 MB of
    weights) that was most of its 0.5 s of CPU, see docs/design.md. Where that session cannot be
    made, the serialized model's is, so that a model ONNX Runtime refuses is refused with the
    words of :func:`load_error`."""
    from calibration.observers import in_memory_session

    try:
        return in_memory_session(model, _options())
    except Exception:  # ONNX Runtime's own reason, as the serialized model's session gives it
        return _session(model.SerializeToString(), model)


def reference_outputs(model: onnx.ModelProto, feed: Mapping[str, Any]) -> list[Any]:
    """``model``'s outputs on ``feed`` from onnx's reference evaluator (numpy: slow on large
    models, for those ONNX Runtime cannot load). Raises what the evaluator raises."""
    from onnx.reference import ReferenceEvaluator

    inits = {i.name for i in model.graph.initializer}
    names = {i.name for i in model.graph.input if i.name not in inits}
    return list(ReferenceEvaluator(model).run(None, {k: v for k, v in feed.items() if k in names}))


_FLOAT_INPUTS = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}


def _fit(value: Any, ort_type: str) -> Any:
    """A float array in the float type the artifact takes (an fp16 model built without
    keep_io_types takes float16 where its source took float32)."""
    import numpy as np

    want = _FLOAT_INPUTS.get(ort_type)
    if want is None or not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        return value
    return value.astype(want, copy=False)


def default_feed(
    model_path: str | os.PathLike[str] | onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None
) -> dict[str, Any] | None:
    """One seeded random feed shaped from the inputs of the model (a file, or one in memory) and the
    ``shapes`` given for them (``--input``), else their dynamic dims as 1 (None when such inputs
    cannot be made)."""
    from calibration.modelinfo import graph_io, model_io
    from calibration.sources import open_source

    try:
        inputs, _ = graph_io(model_path) if isinstance(model_path, onnx.ModelProto) else model_io(model_path)
        batch = next((s[0] for s in (shapes or {}).values() if s), 1)
        return next(
            iter(open_source("random:0", inputs, samples=batch, batch_size=batch, shapes=shapes)), None
        )
    except Exception:  # inputs we cannot synthesize (sequences, odd types): load-only check
        return None


FLOAT32_RTOL = 1e-3  # of the largest magnitude of the output, for float32's rounding in another order
FLOAT32_ATOL = 1e-5


def output_difference(want: Any, have: Any, wanted_by: str = "the source gives") -> str | None:
    """How the array ``have`` differs from ``want`` (what ``wanted_by`` names), or None when it does
    not beyond float32's rounding (``FLOAT32_ATOL + FLOAT32_RTOL * max|want|``, over its finite
    values); NaN agrees with NaN, and integers and booleans must be equal. The export's comparison
    with the PyTorch module and the check of an opset conversion both judge by it."""
    import numpy as np

    if want.shape != have.shape:
        return f"has shape {list(have.shape)} where {wanted_by} {list(want.shape)}"
    if want.size == 0:
        return None
    if want.dtype.kind in "fc" or have.dtype.kind in "fc":
        kind = np.complex128 if "c" in (want.dtype.kind, have.dtype.kind) else np.float64
        w, h = want.astype(kind), have.astype(kind)
        with np.errstate(invalid="ignore", over="ignore"):
            same = (w == h) | (np.isnan(w) & np.isnan(h))
            error = np.where(same, 0.0, np.abs(w - h))
        worst = float(np.nan_to_num(error, nan=np.inf).max())
        finite = np.abs(w[np.isfinite(w)])
        tolerance = FLOAT32_ATOL + FLOAT32_RTOL * (float(finite.max()) if finite.size else 0.0)
        if worst > tolerance:
            return f"differs by up to {worst:.3g} (float32 tolerance {tolerance:.2g})"
        return None
    if not np.array_equal(want, have):
        wrong = int(np.count_nonzero(want != have)) if want.dtype == have.dtype else want.size
        return f"differs in {wrong} of {want.size} values"
    return None


def _short(text: str, limit: int = 120) -> str:
    for prefix in ("[ShapeInferenceError] Inference error(s): ", "[ShapeInferenceError] "):
        text = text.removeprefix(prefix)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


PROTOBUF_LIMIT = 2**31 - 1  # one protobuf message holds at most 2 GB


def full_check(model: str | os.PathLike[str] | onnx.ModelProto | bytes) -> None:
    """onnx's full checker, of a file, a model or its bytes.

    A file whose tensors live in external data is checked with that data read into memory when
    the whole fits in one protobuf: checked by path, onnx's shape inference cannot read an
    external tensor its inference needs (a ReduceMean's axes, a Reshape's shape) and fails a valid
    model ("Cannot parse data from external tensors"). Only a model over 2 GB is checked by path,
    as protobuf requires. The structural check by path comes first all the same: it is the one
    that vets the data files' locations."""
    if isinstance(model, (onnx.ModelProto, bytes)):
        onnx.checker.check_model(model, full_check=True)
        return
    path = os.fspath(model)
    loaded = _with_external_data(path)
    if loaded is None:
        onnx.checker.check_model(path, full_check=True)
        return
    onnx.checker.check_model(path)
    onnx.checker.check_model(loaded, full_check=True)


def _with_external_data(path: str) -> onnx.ModelProto | None:
    """The model at ``path`` with its external data read in; None when it has none, is over
    protobuf's limit with it, or cannot be read (the checker by path then says why)."""
    from onnx.external_data_helper import _get_all_tensors, load_external_data_for_model, uses_external_data

    try:
        model = onnx.load(path, load_external_data=False)
        external = [t for t in _get_all_tensors(model) if uses_external_data(t)]
        if not external:
            return None
        base = Path(path).parent
        files = {next((e.value for e in t.external_data if e.key == "location"), "") for t in external}
        if model.ByteSize() + sum((base / f).stat().st_size for f in files) > PROTOBUF_LIMIT:
            return None
        load_external_data_for_model(model, os.fspath(base))
    except Exception:
        return None
    return model


def check_as_strict_as_source(model: Path | onnx.ModelProto | bytes, source: Any = None) -> None:
    """onnx's full checker (of a file, a model or its bytes); where the source model (a path or
    ModelProto) fails it too (onnx's function expansion rejects some valid models,
    MeanVarianceNormalization for one; an output without a shape), the structural checker the
    source passes."""
    target = os.fspath(model) if isinstance(model, Path) else model
    try:
        full_check(target)
    except Exception:
        if source is None or _passes_full_check(source):
            raise
        onnx.checker.check_model(target)


def _passes_full_check(model: Any) -> bool:
    try:
        full_check(model)
    except Exception:
        return False
    return True


def verify_artifact(
    path: str | os.PathLike[str],
    feed: Mapping[str, Any] | None = None,
    *,
    source: str | os.PathLike[str] | None = None,
    companions: Iterable[str | os.PathLike[str]] = (),
    what: str = "the artifact",
    fed: str = "random inputs",
    content: bytes | None = None,
    model: onnx.ModelProto | None = None,
    checked: bool = False,
) -> str | None:
    """Check ``path`` (full onnx checker, ONNX Runtime load and one run); remove it and its
    ``companions`` and raise :class:`ArtifactError` when it fails.

    ``content``: the file's bytes, when the caller has just written them: the checker checks them
    instead of reading the file back (a model with external data is checked by path all the same).
    ``model``: the model those bytes serialize, when the caller holds it: the ONNX Runtime
    optimizers that crash on it are looked up on it, not on the file parsed again (27 MB for
    captcha-rec's fp16 artifact, 0.03 s of CPU).
    ``checked``: the caller ran :func:`check_as_strict_as_source` on the bytes it wrote (calibrate's
    ``check_qdq``): the checker is not run on them a second time, only the load and the run.

    ``feed`` is the input to run (default: one seeded random feed; ``fed`` says what it is);
    ``source`` is the model the artifact was made from: when the source fails on the feed as well,
    the load is the check, unless ONNX Runtime failed the source only by not loading it and onnx's
    reference evaluator runs it on the feed (then the artifact is refused).
    Returns None when the artifact ran, else why it was loaded only (for the caller to say so).
    """

    path = Path(path)
    doomed = [path, *(Path(c) for c in companions)]
    if source is not None:  # never the user's own files: the source itself, or data beside it
        own = Path(source).resolve()
        doomed = [d for d in doomed if d.resolve() != own and (d == path or d.resolve().parent != own.parent)]
    try:
        if not checked:
            check_as_strict_as_source(path if content is None else content, source)
    except Exception as exc:
        _remove(doomed)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ArtifactError(f"{what} fails onnx.checker ({_short(first)}); it was not kept") from None
    if feed is None:
        feed = default_feed(source or path)
    try:
        session = _session(os.fspath(path), model if content is not None else None)
    except Exception as exc:
        _remove(doomed)
        # the source model failing to load too is said of it (checked only here, when it matters)
        if source is not None and (refusal := unloadable(source)) is not None:
            raise SourceModelError(refusal) from None
        raise ArtifactError(f"ONNX Runtime cannot load {what} ({ort_error(exc)}); it was not kept") from None
    if feed is None:
        return "no random input can be made for its inputs"
    why = _runs(os.fspath(path), feed, session)
    if why is None:
        return None
    if source is not None and _runs(os.fspath(source), feed) is not None:
        if not _only_the_reference_runs(source, feed):
            # the source model fails on this feed too: the data is at fault, the load is the check
            return f"{fed} fail the model it was made from too ({_short(why)})"
        _remove(doomed)
        raise ArtifactError(
            f"ONNX Runtime cannot run {what} ({_short(why)}), while onnx's reference evaluator runs the "
            f"model it was made from (which ONNX Runtime cannot load) on {fed}; it was not kept"
        )
    _remove(doomed)
    raise ArtifactError(f"ONNX Runtime cannot run {what} ({why}); it was not kept")


def _only_the_reference_runs(source: str | os.PathLike[str], feed: Mapping[str, Any]) -> bool:
    """Whether ``source``, which failed in ONNX Runtime, failed there only because ONNX Runtime
    cannot load it (an opset-6 PRelu, an IR 3 file) and onnx's reference evaluator runs it on
    ``feed``: then the artifact's failure on that feed is not the data's."""
    if unloadable(source) is None:
        return False
    try:
        reference_outputs(onnx.load(os.fspath(source)), feed)
    except Exception:
        return False
    return True
