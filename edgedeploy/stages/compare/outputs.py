"""Output metrics of the compare stage: a candidate (fp16/int8 ONNX, engine) against the fp32 reference.

Both run through Polygraphy runners and its Comparator on the same feeds; on its run
results we compute the figures users ask for and Polygraphy's CLI does
not print together: max/mean/p99 absolute and relative error, cosine similarity, SNR, NaN/Inf
counts and argmax agreement, and gate them.

Argmax agreement (``top1_agreement`` in the JSON, gated by ``min_top1``): for every 2-D float
output of at least 2 columns, the share of rows whose largest entry is at the same index. For a
classifier's (batch, classes) scores it is the top-1 agreement; a shape cannot tell those from an
embedding (MiniLM's [B, 384] sentence vector), where it means nothing, and neither can a name
(exporters call logits output_0) or the values (logits are no distribution), so it is measured
for all of them and labelled what it is: "argmax agr." in the tables and the report (README, compare).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from calibration.feeds import batch_axes as feed_batch_axes
from calibration.feeds import feed_rows, fixed_batches
from calibration.modelinfo import TensorSpec, batch_axes, batch_names, model_io
from calibration.sources import Feed
from edgedeploy.backends import backend_for_artifact
from edgedeploy.backends.onnxruntime import OnnxRuntimeBackend
from edgedeploy.device.verify_outputs import (  # the device's figures: both decide alike
    finite_pairs,
    scale_cosine,
    scale_failure,
)
from edgedeploy.errors import InputError, first_line
from edgedeploy.fileio import scratch_dir, sha256_file
from edgedeploy.onnxio import is_onnx_path, load_onnx, save_onnx
from edgedeploy.stages.compare.gates import Gates, relative_error, snr_db
from edgedeploy.stages.compare.layers import (
    EMULATED,
    ReferenceRun,
    candidate_graph,
    integer_mode,
)
from edgedeploy.stages.precision.emulate import is_fp16_model, onnx_precision
from edgedeploy.ui import cosine_figure


@dataclass
class OutputMetrics:
    # NaN/Inf figures go to JSON as "NaN", "Infinity", "-Infinity" (edgedeploy.results): null is
    # the SNR of identical outputs
    JSON_NONFINITE_AS_TEXT: ClassVar[bool] = True

    name: str
    # the reference's output over every batch compared, as the figures are: a dim the batches
    # differ in (a short last batch, a dynamic width or sequence) is None; ``shapes`` lists them
    shape: list[int | None]
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    p99_rel: float
    cosine: float
    snr_db: float | None  # None when the outputs are identical (infinite SNR; see ``identical``)
    nan_count: int
    inf_count: int
    reference_nan_inf: int
    allclose: bool  # every element within atol + rtol * |reference|
    top1_agreement: float | None = None
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    # bool and integer outputs (masks, class ids, indices): the share of elements equal, which the
    # cosine gate reads instead of the cosine (a class id 3 for 4 is no "nearly the same answer")
    equal_share: float | None = None
    shape_mismatch: str | None = None  # data-dependent outputs (NMS) of another size in a batch
    # elements where either side is NaN/Inf and the other is not the same (a finite value, the other
    # infinity, a number for NaN): each an infinite error; a NaN or Inf the candidate reproduces is equal
    nonfinite_mismatches: int = 0
    # every element equal (a NaN/Inf the candidate reproduces included), in the same shape: what
    # a null snr_db means, said outright
    identical: bool = False
    # norm(candidate) / norm(reference) over the finite pairs, float outputs only: the scale the
    # cosine cannot see, which the cosine gate checks too (verify_outputs.scale_cosine)
    norm_ratio: float | None = None
    # the argmax agreement this output was gated on (--min-top1: a bare value, or this output's
    # NAME:VALUE); None when not gated on it (not named, or no argmax agreement to gate)
    top1_gated: float | None = None
    # each shape the reference's output came out in, in the order first seen (:func:`seen_shapes`)
    shapes: list[list[int]] = field(default_factory=list)

    @property
    def score(self) -> float:
        """What the cosine gate compares: the cosine, or for a discrete output its equal share; for
        a float output off in scale, the scale's reading as a cosine where that is lower
        (:func:`~edgedeploy.device.verify_outputs.scale_cosine`): the gate is score >= min_cosine."""
        if self.equal_share is not None:
            return self.equal_share
        if self.norm_ratio is None or math.isnan(self.cosine):
            return self.cosine
        return min(self.cosine, scale_cosine(self.norm_ratio))


@dataclass
class CompareResult:
    reference: str
    candidate: str
    data: dict[str, object]
    iterations: int
    gates: Gates
    outputs: dict[str, OutputMetrics]
    passed: bool
    # How the candidate ran: "onnx" as it is, or "fp16 (CPU emulation of fp16 storage)" (see compare()).
    mode: str = "onnx"
    # what an ONNX candidate computes in, from its content (precision.emulate.onnx_precision)
    candidate_precision: str | None = None
    # the reference's outputs not compared, as "'name' (type)": sequences, maps, optionals, strings
    not_compared: list[str] = field(default_factory=list)
    # the files compared, by content: report tells two models of one file name apart by them
    # (edgedeploy/stages/report/load.py), where a path alone names whatever is there now
    reference_sha256: str | None = None
    candidate_sha256: str | None = None
    # how the reference was converted to run, where ONNX Runtime cannot load it (an opset-6 Gemm):
    # {from, to, reason} (layers.reference_to_run), or None where it ran as it is
    reference_conversion: dict[str, Any] | None = None

    def summary(self) -> dict[str, object]:
        """The short form kept in manifests: pass/fail and the headline figures per output."""
        return {
            "passed": self.passed,
            "mode": self.mode,
            "iterations": self.iterations,
            "outputs": {
                n: {
                    "max_abs": m.max_abs,
                    "cosine": m.cosine,
                    "norm_ratio": m.norm_ratio,
                    "snr_db": m.snr_db,
                    "top1_agreement": m.top1_agreement,
                    "top1_gated": m.top1_gated,
                    "equal_share": m.equal_share,
                    "nan_inf": m.nan_count + m.inf_count,
                    "nonfinite_mismatches": m.nonfinite_mismatches,
                    "identical": m.identical,
                    "failures": m.failures,
                }
                for n, m in self.outputs.items()
            },
        }


def output_metrics(
    name: str, ref_batches: Sequence[np.ndarray], cand_batches: Sequence[np.ndarray], gates: Gates
) -> OutputMetrics:
    """Error statistics of one output over every compared batch."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):  # Inf/NaN are counted, not warned
        return _output_metrics(name, ref_batches, cand_batches, gates)


def _output_metrics(
    name: str, ref_batches: Sequence[np.ndarray], cand_batches: Sequence[np.ndarray], gates: Gates
) -> OutputMetrics:
    if not ref_batches:
        raise InputError(f"output '{name}': no batches to compare")
    if len(ref_batches) != len(cand_batches):
        raise InputError(
            f"output '{name}': {len(ref_batches)} batches from the reference, {len(cand_batches)} from "
            "the candidate"
        )
    shapes = seen_shapes(ref_batches)
    for k, (rb, cb) in enumerate(zip(ref_batches, cand_batches, strict=True)):
        if np.shape(rb) != np.shape(cb):  # a data-dependent size (NonZero, NMS) that came out otherwise
            why = f"batch {k}: shape {list(np.shape(cb))}, reference {list(np.shape(rb))}"
            return _mismatched(name, shapes, why)
    ref_own = np.concatenate([np.asarray(r).reshape(-1) for r in ref_batches])
    cand_own = np.concatenate([np.asarray(c).reshape(-1) for c in cand_batches])
    pairs = finite_pairs(ref_own, cand_own)  # the device's split (verify_outputs.py), one copy
    r, abs_err, mismatches = pairs.ref, pairs.abs_err, pairs.mismatches  # over the finite pairs
    rel_err = relative_error(abs_err, r, pairs.discrete) if r.size else np.zeros(1)  # Polygraphy's
    snr = None if pairs.identical else snr_db(float(np.sum(r**2)), float(np.sum(abs_err**2)))
    allclose = bool(not mismatches and np.all(abs_err <= gates.atol + gates.rtol * np.abs(r)))
    # the largest errors: a mismatch's (infinite), else the finite pairs'
    max_abs, max_rel = (math.inf, math.inf) if mismatches else (float(abs_err.max()), float(rel_err.max()))
    top1 = None if pairs.discrete else _top1_agreement(ref_batches, cand_batches)
    metrics = OutputMetrics(
        name=name,
        shape=common_shape(shapes),
        shapes=shapes,
        max_abs=max_abs,
        mean_abs=float(abs_err.mean()),
        p99_abs=float(np.percentile(abs_err, 99)),
        max_rel=max_rel,
        mean_rel=float(rel_err.mean()),
        p99_rel=float(np.percentile(rel_err, 99)),
        cosine=pairs.cosine,
        snr_db=snr,
        nan_count=pairs.nan,
        inf_count=pairs.inf,
        reference_nan_inf=pairs.reference_nan_inf,
        allclose=allclose,
        top1_agreement=top1,
        equal_share=pairs.equal_share,
        nonfinite_mismatches=mismatches,
        identical=pairs.identical,
        norm_ratio=pairs.norm_ratio,
        top1_gated=None if top1 is None else gates.top1_for(name),
    )
    metrics.failures = gate_failures(metrics, gates)
    metrics.passed = not metrics.failures
    return metrics


def seen_shapes(batches: Sequence[np.ndarray]) -> list[list[int]]:
    """Each shape of ``batches``, once, in the order first seen."""
    shapes: list[list[int]] = []
    for batch in batches:
        if (shape := [int(d) for d in np.shape(batch)]) not in shapes:
            shapes.append(shape)
    return shapes


def common_shape(shapes: Sequence[Sequence[int]]) -> list[int | None]:
    """The dims ``shapes`` agree on, None where they differ; [] for none (or ranks that differ,
    where no dim lines up)."""
    if not shapes or len({len(s) for s in shapes}) > 1:
        return []
    return [dims[0] if len(set(dims)) == 1 else None for dims in zip(*shapes, strict=True)]


def _mismatched(name: str, shapes: list[list[int]], why: str) -> OutputMetrics:
    """The metrics of an output whose candidate came out in another shape: failed, no figures;
    ``shapes``: the reference's (:func:`seen_shapes`)."""
    nan, inf = float("nan"), float("inf")
    return OutputMetrics(
        name=name,
        shape=common_shape(shapes),
        shapes=shapes,
        max_abs=inf,
        mean_abs=inf,
        p99_abs=inf,
        max_rel=inf,
        mean_rel=inf,
        p99_rel=inf,
        cosine=nan,
        snr_db=-inf,
        nan_count=0,
        inf_count=0,
        reference_nan_inf=0,
        allclose=False,
        passed=False,
        failures=[f"another shape than the reference's ({why})"],
        shape_mismatch=why,
    )


def _top1_agreement(ref_batches: Sequence[np.ndarray], cand_batches: Sequence[np.ndarray]) -> float | None:
    """Share of rows whose arg-max agrees, for outputs shaped (batch, classes)."""
    first = np.asarray(ref_batches[0]) if ref_batches else None
    if first is None or first.ndim != 2 or first.shape[1] < 2:
        return None
    ref = np.concatenate([np.asarray(r).argmax(axis=1) for r in ref_batches])
    cand = np.concatenate([np.asarray(c).argmax(axis=1) for c in cand_batches])
    return float(np.mean(ref == cand)) if ref.size else None  # no rows (an empty batch): nothing to agree on


def gate_failures(m: OutputMetrics, gates: Gates) -> list[str]:
    failures = []
    if m.nonfinite_mismatches:  # NaN/Inf where the reference holds another value, or the reverse
        failures.append(
            f"{m.nonfinite_mismatches} NaN/Inf value(s) unlike the reference's (the candidate holds "
            f"{m.nan_count} NaN and {m.inf_count} Inf, the reference {m.reference_nan_inf} NaN/Inf)"
        )
    if gates.min_cosine is not None and m.equal_share is not None and not m.equal_share >= gates.min_cosine:
        failures.append(f"equal elements {m.equal_share:.4f} < {gates.min_cosine} (a bool/integer output)")
    elif gates.min_cosine is not None and m.equal_share is None and not (m.cosine >= gates.min_cosine):
        failures.append(f"cosine {cosine_figure(m.cosine, gates.min_cosine)} < {gates.min_cosine}")
    scale = None if m.equal_share is not None else scale_failure(m.norm_ratio, gates.min_cosine)
    if scale is not None:
        failures.append(scale)
    top1 = gates.top1_for(m.name)  # a bare --min-top1, or this output's NAME:VALUE
    if top1 is not None and m.top1_agreement is not None and not m.top1_agreement >= top1:
        failures.append(f"argmax agreement {m.top1_agreement:.4f} < {top1}")
    if gates.check_allclose and not m.allclose:
        failures.append(f"max abs error {m.max_abs:.3g} exceeds atol={gates.atol} + rtol={gates.rtol}*|ref|")
    return failures


@contextlib.contextmanager
def _quiet_polygraphy() -> Iterator[None]:
    """Polygraphy silent while it runs for compare: its info lines would interleave with ours, and a
    feed it refuses (``G_LOGGER.critical``) printed ``[!]`` lines to stderr before the exception
    that carries the same text reached the user as one line (``errors.user_failure``). Its error
    lines are silenced too: ``Comparator.run`` logs them with an exception, and the NaN/Inf lines
    of its ``validate`` (not called here) are compare's own counts."""
    from polygraphy.logger import G_LOGGER

    old = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.CRITICAL + 1  # above every severity: nothing is printed
    logging.getLogger("polygraphy").setLevel(logging.CRITICAL + 1)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        G_LOGGER.module_severity = old


def _after(
    check: Callable[[], None], infer: Callable[..., Any], inputs_checked: bool = True
) -> Callable[..., Any]:
    """``infer`` after ``check``; ``inputs_checked=False``: without Polygraphy's input check. Its
    outputs are the tensors only (:func:`_tensors`)."""

    def checked(*args: Any, **kwargs: Any) -> Any:
        check()
        if not inputs_checked:
            kwargs["check_inputs"] = False
        return _tensors(infer(*args, **kwargs))

    return checked


def _tensors(outputs: Any) -> Any:
    """A runner's outputs without those that are not numeric arrays: ONNX Runtime gives a sequence
    output as a list (of dicts for a map, ZipMap's), on which Polygraphy's Comparator stopped with
    "dtype is unsupported for objects of type: list"; a string tensor is an object array.
    :func:`compare` names what was left out (:func:`comparable`)."""
    dropped = [k for k, v in outputs.items() if not isinstance(v, np.ndarray) or v.dtype == object]
    for name in dropped:
        del outputs[name]
    return outputs


def comparable(outputs: Sequence[TensorSpec]) -> tuple[list[str], list[str]]:
    """The names of the ``outputs`` compare compares (:func:`is_compared`), and the others as
    "'name' (type)": sequences, maps, optionals (see calibration.modelinfo.type_text), string
    tensors."""
    kept, left = [], []
    for spec in outputs:
        if is_compared(spec):
            kept.append(spec.name)
        else:
            left.append(f"'{spec.name}' ({spec.kind or 'tensor(string)'})")
    return kept, left


def refuse_without_tensor_outputs(
    model: str, outputs: Sequence[TensorSpec], why: str = "compare compares numeric tensor outputs only"
) -> None:
    """InputError (one line naming ``model``'s outputs and ``why``) when none of ``outputs`` is a
    numeric tensor (:func:`is_compared`): there is nothing to compare, and a check of nothing cannot
    fail (as Polygraphy's Comparator stops on "no common outputs found"). compare, bundle and run
    refuse such a model alike."""
    kept, left = comparable(outputs)
    if left and not kept:
        raise InputError(f"{model} has no tensor output to compare (its outputs: {', '.join(left)}): {why}")


def is_compared(spec: TensorSpec) -> bool:
    """Whether output ``spec`` is a numeric tensor, which compare and accuracy budgets measure."""
    return spec.kind is None and spec.dtype != "object"


def _inputs_polygraphy_refuses(path: Path, inputs: Sequence[TensorSpec] | None = None) -> bool:
    """Whether an ONNX model declares an input Polygraphy's input check refuses every feed of: one
    without a shape (not even a rank), which ONNX Runtime reports as a scalar, or a string tensor
    (Polygraphy maps only numpy's zero-length ``<U0`` to its STRING, so an object or ``<U5``
    array is an "unexpected dtype"). The feeds were checked against the model's own declarations
    before (``calibration.feeds``), and ONNX Runtime takes both. ``inputs``: the model's, where the
    caller has read them."""
    if not is_onnx_path(path):
        return False
    specs = model_io(path)[0] if inputs is None else inputs
    return any(not spec.rank_known or spec.dtype == "object" for spec in specs)


def run_pair(
    reference: Path,
    candidate: Path,
    feeds: Iterable[Feed],
    threads: int | None = None,
    emulate_integer: bool = False,
    known_inputs: Mapping[Path, Sequence[TensorSpec]] | None = None,
) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """Run both models on the same feeds with Polygraphy's Comparator; return their outputs per batch
    (``emulate_integer``: the candidate, an ONNX model, with its integer kernels emulated in float;
    ``known_inputs``: the inputs of the model files the caller has read, not read again)."""
    from polygraphy.comparator import Comparator

    from edgedeploy.interrupts import deferred

    ref_runner = backend_for_artifact(str(reference)).runner(reference, threads=threads)
    if emulate_integer:
        cand_runner = OnnxRuntimeBackend().runner(candidate, threads=threads, emulate_integer=True)
    else:
        cand_runner = backend_for_artifact(str(candidate)).runner(candidate, threads=threads)
    feed_list = list(feeds)
    # Polygraphy swallows a Ctrl-C that lands in its bare excepts (see edgedeploy/interrupts.py):
    # hold it, and stop before the next batch instead
    with deferred() as stop_if_interrupted, _quiet_polygraphy():
        for runner, path in ((ref_runner, reference), (cand_runner, candidate)):
            inputs_checked = not _inputs_polygraphy_refuses(Path(path), (known_inputs or {}).get(Path(path)))
            runner.infer = _after(stop_if_interrupted, runner.infer, inputs_checked)  # type: ignore[method-assign]
        results = Comparator.run([ref_runner, cand_runner], data_loader=feed_list)
    (_, ref_out), (_, cand_out) = results
    return [dict(o.items()) for o in ref_out], [dict(o.items()) for o in cand_out]


def compare(
    reference: Path,
    candidate: Path,
    feeds: Iterable[Feed],
    gates: Gates | None = None,
    data_description: dict[str, object] | None = None,
    threads: int | None = None,
    emulate_fp16: bool = True,
    prepared: ReferenceRun | None = None,
    known_io: Mapping[Path, tuple[list[TensorSpec], list[TensorSpec]]] | None = None,
) -> CompareResult:
    """Compare ``candidate`` with ``reference`` on ``feeds`` and gate the result.

    ONNX Runtime's CPU provider has fp16 kernels for few ops and silently computes the rest in
    fp32, which hides fp16 overflow a GPU would show. So an fp16 ONNX candidate is run as its
    emulation: the fp32 graph with every tensor the candidate stores in fp16 rounded to fp16
    (``emulate_fp16=False`` runs the candidate as it is). Likewise an int8 candidate made for a
    CPU with VNNI (uint8 activations, 8-bit weights) runs with its integer arithmetic emulated in
    float where this CPU lacks VNNI: ONNX Runtime's kernels here saturate on it, the target's do not.
    An int8 candidate with int8 activations (TensorRT's placement) always runs emulated: that is
    what TensorRT computes, and what ``auto`` and the accuracy budgets measure it by. A reference
    ONNX Runtime cannot load at its opset (an opset-6 Gemm) runs from the checked conversion its fp16
    build makes (:func:`~edgedeploy.stages.compare.layers.reference_to_run`), recorded in the result.

    Args:
        reference: the fp32 reference ONNX.
        candidate: an fp16 / int8 ONNX or a TensorRT engine (run on its backend).
        feeds: the input batches, the same for both models.
        gates: what a pass needs (default :class:`Gates`).
        data_description: what the data is (``DataSource.describe()``), recorded in the result.
        threads: ONNX Runtime intra-op threads.
        emulate_fp16: run an fp16 ONNX candidate as its CPU emulation (see above).
        prepared: ``reference`` as run (:class:`~edgedeploy.stages.compare.layers.ReferenceRun`),
            which the caller may run again (``compare --per-layer`` gives both comparisons one).
        known_io: the inputs and outputs (``model_io``) of the models the caller has read, by
            path: the ``compare`` command reads them for its own checks first.
    """
    gates = gates or Gates()
    if prepared is not None:
        prepared.check_made_from(reference)
    # the models' inputs and outputs, read once (each read parses the whole model) and passed down
    known = dict(known_io or {})
    ref_inputs, ref_outputs = known[reference] if reference in known else model_io(reference)
    cand_inputs = None  # an engine candidate: no ONNX inputs to read
    if is_onnx_path(candidate):
        cand_inputs = (known[candidate] if candidate in known else model_io(candidate))[0]
    check_same_inputs(reference, candidate, ref_inputs, cand_inputs)
    # a --min-top1 NAME:VALUE the reference lacks (the commands refuse it first, before any work)
    gates.check_top1_outputs([o.name for o in ref_outputs], reference.name, "min_top1")
    refuse_without_tensor_outputs(reference.name, ref_outputs)
    others = comparable(ref_outputs)[1]
    if cand_inputs is not None:  # a candidate fixed at one batch beside a dynamic reference
        feeds = fixed_batches(feeds, ref_inputs, cand_inputs)
    feeds = list(feeds)  # (run_pair holds them all too) counted: the data may hold fewer than asked
    digests = sha256_file(reference), sha256_file(candidate)  # of the files as they are measured
    description = dict(data_description or {})
    if feeds:  # a time-first model's samples are on its batch axis, not dim 0
        description["samples_compared"] = sum(feed_rows(f, ref_inputs) for f in feeds)
    axes = _output_batch_axes(ref_inputs, ref_outputs)
    ranges = candidate_batches(reference, candidate, ref_inputs) if feeds else []
    feeds, padded = _pad_short_batches(ranges, ref_inputs, axes, feeds)
    if padded:
        description["padded"] = padded
    known_inputs = {reference: ref_inputs, **({candidate: cand_inputs} if cand_inputs is not None else {})}
    with scratch_dir("compare") as folder:
        scratch = Path(folder)
        run_reference, conversion = _reference_to_run(prepared or ReferenceRun(reference), scratch)
        run_candidate, mode, precision = _candidate_to_run(run_reference, candidate, scratch, emulate_fp16)
        ref_out, cand_out = run_pair(
            run_reference, run_candidate, feeds, threads, mode in EMULATED, known_inputs
        )
    if padded:  # the padded rows are left out of every figure
        ref_out, cand_out = _unpadded(axes, ref_out, padded), _unpadded(axes, cand_out, padded)
    if not ref_out:
        raise InputError("no data to compare on")
    outputs: dict[str, OutputMetrics] = {}
    for name in ref_out[0]:
        if name not in cand_out[0]:
            raise InputError(f"the candidate {candidate} has no output named '{name}'")
        outputs[name] = output_metrics(name, [o[name] for o in ref_out], [o[name] for o in cand_out], gates)
    return CompareResult(
        reference=str(reference),
        candidate=str(candidate),
        candidate_precision=precision,
        data=description,
        iterations=len(ref_out),
        mode=mode,
        gates=gates,
        outputs=outputs,
        passed=all(m.passed for m in outputs.values()),
        not_compared=others,
        reference_sha256=digests[0],
        candidate_sha256=digests[1],
        reference_conversion=conversion,
    )


def _pad_short_batches(
    ranges: Sequence[tuple[int, int]],
    specs: Sequence[TensorSpec],
    output_axes: Mapping[str, int | None],
    feeds: list[Feed],
) -> tuple[list[Feed], list[dict[str, int]]]:
    """``feeds`` with each batch an engine candidate's shape profiles (``ranges``, its
    :func:`candidate_batches`) do not take because it holds too few samples (the data's short last
    batch) padded to the least batch a profile takes, its last sample repeated on every input's
    batch axis (the reference's inputs ``specs`` name them); and per padded batch its number (from
    1), its own samples and the batch it was padded to, for :func:`_unpadded` and the record. An
    ONNX candidate (no ``ranges``), or one whose outputs do not all carry the batch
    (``output_axes``, :func:`_output_batch_axes`: the padding could not be dropped from them), is
    left as it is (``compare`` then says which batch the engine refuses)."""
    if not ranges or any(axis is None for axis in output_axes.values()):
        return feeds, []
    axes = feed_batch_axes(specs)
    out: list[Feed] = []
    padded: list[dict[str, int]] = []
    for number, feed in enumerate(feeds, 1):
        rows = feed_rows(feed, specs)
        larger = [lo for lo, hi in ranges if lo > rows]
        if rows < 1 or any(lo <= rows <= hi for lo, hi in ranges) or not larger:
            out.append(feed)
            continue
        size = min(larger)
        index = np.concatenate([np.arange(rows), np.full(size - rows, rows - 1)])
        grown: Feed = {}
        for name, array in feed.items():
            axis = axes.get(name)
            usable = axis is not None and np.ndim(array) > axis and np.shape(array)[axis] == rows
            grown[name] = np.take(array, index, axis=axis) if usable else array
        out.append(grown)
        padded.append({"batch": number, "samples": rows, "padded_to": size})
    return out, padded


def _output_batch_axes(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> dict[str, int | None]:
    """Each output's batch axis, as the model (its ``inputs`` and ``outputs``) names it (the axis
    named as its inputs' batch, else a dynamic dim 0); None where it has none."""
    names = batch_names(inputs)
    return {o.name: next(iter(batch_axes(o.shape, names)), None) for o in outputs if o.kind is None}


def _unpadded(
    axes: Mapping[str, int | None], outputs: list[dict[str, np.ndarray]], padded: list[dict[str, int]]
) -> list[dict[str, np.ndarray]]:
    """``outputs`` (per batch) with the rows :func:`_pad_short_batches` added cut off again, on each
    output's batch axis (``axes``, :func:`_output_batch_axes`)."""
    kept = list(outputs)
    for pad in padded:
        i, rows = pad["batch"] - 1, pad["samples"]
        if i < len(kept):
            kept[i] = {
                name: np.take(array, np.arange(rows), axis=axes[name])
                if axes.get(name) is not None and np.ndim(array) > (axes[name] or 0)
                else array
                for name, array in kept[i].items()
            }
    return kept


def padding_note(result: CompareResult) -> list[str]:
    """What was padded to run on an engine (:func:`_pad_short_batches`), one line per batch."""
    padded = result.data.get("padded")
    if not isinstance(padded, list):
        return []
    said = []
    for pad in padded:
        which = "the last batch" if pad["batch"] == result.iterations else f"batch {pad['batch']}"
        said.append(
            f"{which} of {pad['samples']} sample(s) was padded to {pad['padded_to']} (the least batch "
            f"{Path(result.candidate).name}'s shape profile takes) with its last sample repeated; the "
            "padded rows were not compared"
        )
    return said


def candidate_batches(
    reference: Path, candidate: Path, inputs: Sequence[TensorSpec] | None = None
) -> list[tuple[int, int]]:
    """The batch sizes an engine candidate takes, per shape profile (lowest, highest), its batch
    axes named as the reference's inputs (``inputs``, where the caller has read them) name them;
    empty for an ONNX candidate and an engine with no dynamic batch. An engine this machine cannot
    run is refused in one line first, as the compare would refuse it."""
    if is_onnx_path(candidate):
        return []
    from edgedeploy.backends import trt_env, trt_sidecar
    from edgedeploy.backends.runtime.engine import engine_batch_ranges

    backend_for_artifact(str(candidate))  # where TensorRT is missing
    trt_sidecar.check_loadable(candidate, trt_sidecar.read_sidecar(candidate), trt_env.environment())
    return engine_batch_ranges(candidate, model_io(reference)[0] if inputs is None else inputs)


def check_same_inputs(
    reference: Path,
    candidate: Path,
    ref_inputs: Sequence[TensorSpec] | None = None,
    cand_inputs: Sequence[TensorSpec] | None = None,
) -> None:
    """The same feeds go to both models: an ONNX candidate must take the reference's inputs (one
    made from another model fails otherwise as ONNX Runtime's broadcast or kernel error).
    ``ref_inputs``, ``cand_inputs``: the models' inputs, where the caller has read them."""
    if not is_onnx_path(candidate):
        return
    ours, theirs = (
        sorted(i.name for i in (model_io(m)[0] if known is None else known))
        for m, known in ((reference, ref_inputs), (candidate, cand_inputs))
    )
    if ours != theirs:
        raise InputError(
            f"{candidate.name} takes inputs {', '.join(theirs) or 'none'}, but the reference "
            f"{reference.name} takes {', '.join(ours) or 'none'}: "
            "compare a candidate made from this reference"
        )


# an fp16 candidate not converted from this reference (another tool's, or ONNX Runtime's optimized
# graph): run as it is, where ONNX Runtime's CPU kernels compute most fp16 ops in fp32
FP16_NOT_EMULATED = "onnx (fp16 emulation unavailable"


def unapplied(result: CompareResult) -> list[str]:
    """What was asked of a comparison that it could not do: a top-1 gate with no output of
    (batch, classes) scores, an fp16 candidate that could not be run as its emulation."""
    found = []
    named = result.gates.min_top1
    if isinstance(named, dict):  # NAME:VALUE pairs: each named output must have an argmax to gate
        missed = [n for n in named if n in result.outputs and result.outputs[n].top1_agreement is None]
        if missed:
            found.append(
                f"min top-1: output(s) {', '.join(missed)} hold no (batch, classes) scores, so the top-1 "
                "gate was not applied to them"
            )
        others = [m for n, m in result.outputs.items() if n not in named]
        if "" in named and all(m.top1_agreement is None for m in others):  # the bare value beside pairs
            found.append(
                "min top-1: no output but those named holds (batch, classes) scores, so the value for "
                "every other output was not applied"
            )
    elif named is not None and all(m.top1_agreement is None for m in result.outputs.values()):
        found.append("min top-1: no output holds (batch, classes) scores, so the top-1 gate was not applied")
    found += padding_note(result)
    if result.not_compared:
        found.append(
            f"not compared: output(s) {', '.join(result.not_compared)}, not numeric tensors (compare "
            "compares those only)"
        )
    if result.mode.startswith(FP16_NOT_EMULATED):
        found.append(
            "the fp16 candidate was not converted from this reference, so it ran as it is: ONNX "
            "Runtime's CPU kernels compute most fp16 ops in fp32, and fp16 overflow would not show"
        )
    return found


def compared_file(model: Path, artifact: Path) -> Path:
    """What a pipeline compares for a precision: its fp16 ONNX rather than ONNX Runtime's saved
    copy of it, whose fused and renamed nodes the fp16 emulation cannot follow (ONNX Runtime
    loads either into the same graph); likewise its int8 Q/DQ model where that runs emulated
    (TensorRT's placement, built here with ONNX Runtime for want of TensorRT: the saved copy's
    fused integer ops read what this CPU computes, not what the device's TensorRT does; and a VNNI
    placement on a CPU without VNNI); else the artifact (an int8 model for this CPU, an engine)."""
    if is_onnx_path(artifact) and model != artifact and is_onnx_path(model):
        import onnx

        proto = onnx.load(model, load_external_data=False)
        if is_fp16_model(proto) or integer_mode(proto) is not None:
            return model
    return artifact


def _reference_to_run(prepared: ReferenceRun, scratch: Path) -> tuple[Path, dict[str, Any] | None]:
    """The reference file itself, or its conversion (``prepared``) saved in ``scratch``, and what is
    recorded of that."""
    made = prepared.conversion
    if made is None:
        return prepared.path, None
    (scratch / "reference").mkdir()  # under its own name, apart from the candidate's emulation
    return save_onnx(made[0], scratch / "reference" / prepared.path.name), made[1]


def _candidate_to_run(
    reference: Path, candidate: Path, scratch: Path, emulate_fp16: bool
) -> tuple[Path, str, str | None]:
    """The candidate itself, or (fp16 ONNX) its emulation saved in ``scratch``; the mode says
    which (:data:`EMULATED`: the candidate itself, run with its integer kernels emulated); and what
    an ONNX candidate computes in (:func:`onnx_precision`, from the one load of it), else None."""
    if not is_onnx_path(candidate):
        return candidate, "onnx", None
    if not emulate_fp16:
        return candidate, "onnx", onnx_precision(load_onnx(candidate, load_external_data=False))
    import onnx

    cand_model = load_onnx(candidate)
    precision = onnx_precision(cand_model)
    if not is_fp16_model(cand_model):
        return candidate, integer_mode(cand_model) or "onnx", precision
    ref_model = load_onnx(reference)
    if is_fp16_model(ref_model):  # the reference stores fp16 itself: no fp32 graph to emulate from
        return candidate, "onnx", precision
    try:
        emulated, mode = candidate_graph(ref_model, cand_model)
    except Exception as exc:  # a candidate not converted from this reference: run it as it is
        return candidate, f"{FP16_NOT_EMULATED}: {first_line(exc)[:160]})", precision
    path = scratch / f"{candidate.stem}.emulated.onnx"
    onnx.save(emulated, path)
    return path, mode, precision
